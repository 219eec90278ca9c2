"""What one chain's follower reads: the configured contracts, and the children of every
factory, each bound in the registry to its factory's child ABI.

Children are discovered from their factory's creation event while a range decodes
(``bind_child``), and known again after a restart or a rollback from the table those events
are stored in (``reload``): a rollback deletes creation events, so what ``reload`` finds is
what the canonical chain created. A child is watched from the block of its creation on
(``since``): a contract registered by a factory after it was deployed has no earlier logs here.
(The ``[[chains.contracts]]`` configuration itself is read by ``indexer.watchlist``.)
"""

from __future__ import annotations

from indexer.catalogue import column_name
from indexer.checkpoint import CheckpointStore
from indexer.decode import AbiRegistry, Event, EventSpec
from indexer.types import FactoryWatch


class Watchlist:
    """The addresses of one chain, configured and factory-made (see the module docstring)."""

    def __init__(
        self,
        static: dict[str, str],
        factories: tuple[FactoryWatch, ...],
        registry: AbiRegistry,
        store: CheckpointStore,
    ) -> None:
        self.static = static  # address -> ABI name
        self.factories = factories
        self.registry = registry
        self.store = store
        self.loaded = False
        self._children: dict[str, int] = {}  # child -> block of its creation event
        # (factory ABI, creation event) -> (address parameter, the children's ABI): one dict
        # lookup per decoded log
        self._creations = {
            (fw.factory_abi, fw.event): (fw.parameter, fw.child_abi) for fw in factories
        }

    def addresses(self) -> list[str]:
        """Every address read now, sorted: configured, and factory-made once loaded."""
        return sorted(set(self.static) | self._children.keys())

    @property
    def since(self) -> dict[str, int]:
        """Each child's creation block (configured contracts are not in it)."""
        return self._children

    def is_child(self, address: str) -> bool:
        return address in self._children

    async def ensure_loaded(self) -> None:
        """Load the children the database knows, once (never under a running step)."""
        if not self.loaded:
            await self.reload()

    async def reload(self) -> None:
        """Unbind every child and bind what the database knows: after start, a rollback
        (creations undone) or a dropped prefetch (children bound but never committed)."""
        for address in self._children:
            self.registry.unbind(address)
        self._children = {}
        for fw in self.factories:
            spec = self._creation_spec(fw)
            makers = sorted(a for a, n in self.static.items() if n == fw.factory_abi)
            if spec is None or not makers:
                continue
            column = "args" if spec.table == "other_events" else column_name(fw.parameter)
            for address, block in await self.store.factory_children(
                spec.table, column, makers, spec.name, fw.parameter
            ):
                self.bind_child(address, fw.child_abi, block)
        self.loaded = True

    def child_of(self, ev: Event) -> tuple[str, str] | None:
        """(address, child ABI) when ``ev`` is a configured factory's creation event."""
        found = self._creations.get((ev.spec.contract, ev.spec.name))
        if found is None:
            return None
        value = ev.args().get(found[0])
        return (value, found[1]) if isinstance(value, str) else None

    def bind_child(self, address: str, abi: str, block: int) -> None:
        """Watch ``address`` with ``abi`` from ``block`` (its creation) on."""
        self.registry.bind(address, abi)
        self._children.setdefault(address, block)

    def _creation_spec(self, fw: FactoryWatch) -> EventSpec | None:
        for spec in self.registry.specs():
            if spec.contract == fw.factory_abi and spec.name == fw.event:
                return spec
        return None
