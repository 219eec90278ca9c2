"""How often the loader asks again for blocks whose bloom admits a watched contract the node
returned no log of (``indexer.loader.bloom_asks``): a few suspects are a lagging backend's
signature and get three paced asks; a bloom that admits dozens of absent contracts (thousands
of banks watched) is saturated and gets one ask at once, so that follow latency does not pay
150 ms per block for a filter that says nothing."""

from __future__ import annotations

from indexer.loader import BLOOM_RETRIES, BLOOM_SUSPECTS_MAX, _admitted, bloom_asks
from indexer.types import BlockHeader, _bloom_bits


def bloom_of(addresses: list[str]) -> bytes:
    bloom = bytearray(256)
    for a in addresses:
        for i, m in _bloom_bits(a):
            bloom[i] |= m
    return bytes(bloom)


def header(addresses: list[str]) -> BlockHeader:
    return BlockHeader(7, "0x" + "11" * 32, "0x" + "22" * 32, 0, bloom_of(addresses))


def addr(i: int) -> str:
    return "0x" + i.to_bytes(20, "big").hex()


def test_admitted_counts_what_the_bloom_lets_through_up_to_the_cap() -> None:
    present = [addr(i) for i in range(3)]
    assert _admitted(header(present), present) == 3
    assert _admitted(header([]), present) == 0
    many = [addr(i) for i in range(100)]
    assert _admitted(header(many), many) == BLOOM_SUSPECTS_MAX + 1  # stops counting there


def test_asks_by_how_many_suspects_the_blooms_admit() -> None:
    assert bloom_asks([]) == 0
    assert bloom_asks([0, 0]) == 0
    assert bloom_asks([0, 1]) == BLOOM_RETRIES  # one suspect: maybe a lagging backend
    assert bloom_asks([BLOOM_SUSPECTS_MAX, BLOOM_SUSPECTS_MAX + 1]) == BLOOM_RETRIES
    assert bloom_asks([BLOOM_SUSPECTS_MAX + 1, 0, BLOOM_SUSPECTS_MAX + 1]) == 1  # saturated
