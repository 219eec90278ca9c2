"""`indexer demo`: the whole product on a laptop, and the dev-chain helpers the tests share.

A fenced sub-package: the daemon never imports it (only ``indexer.cli``'s ``demo`` command
does, lazily), so nothing here can change how ``indexer run`` behaves. It lives in the package,
not in ``tests/``, because ``indexer demo`` must work where the tests folder is absent;
``tests/procs.py`` and ``tests/deploy.py`` re-export these modules so that there is one
implementation of starting anvil and PostgreSQL, deploying the contracts and making traffic.

- ``devchain``: anvil and a throwaway (or kept) PostgreSQL cluster as child processes.
- ``contracts``: deploy and drive the project's contracts with sync web3.py.
- ``traffic``: seeded, always-valid transactions that emit every watched event.
- ``app``: the demo itself (setup, daemon in-process, traffic, clean stop).
- ``view``: what it shows: the live view, start-up facts, the summary.
"""
