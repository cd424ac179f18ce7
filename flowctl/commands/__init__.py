"""One module per subcommand group; flowctl.app wires them."""
