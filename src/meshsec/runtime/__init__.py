"""Process runtime shared by the shells: clock, logging, metrics, task supervision."""
