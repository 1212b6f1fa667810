"""``herald bench``: figures measured, never asserted (see README, Benchmarks)."""
