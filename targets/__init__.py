"""Hardware target profiles (one TOML file per device class), shipped as package data."""
