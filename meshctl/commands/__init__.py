"""meshctl subcommands (discovered by meshctl.main)."""
