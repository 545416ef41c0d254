"""Command line: argument parsing and dispatch only. Each command group is one module."""
