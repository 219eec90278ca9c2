"""The rewardsync benchmark (``make bench`` / ``python -m bench``), see bench/run.py.

It lives outside ``indexer/`` because it drives the real ``indexer`` binary as a subprocess,
from a cached anvil chain and a throwaway PostgreSQL, the way an operator would run it."""
