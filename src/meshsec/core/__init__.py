"""The pure domain core: no sockets, files, environment, clocks or randomness it is not given."""
