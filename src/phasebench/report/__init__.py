"""Reports: what a person reads. ``terminal`` prints rich tables (plain when not a terminal)."""
