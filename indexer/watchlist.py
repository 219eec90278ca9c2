"""The contracts a chain watches: its ``[[chains.contracts]]`` tables read into
``ContractSpec``s, each ABI file loaded, each address checked, each factory link resolved.

One section of ``config.load()``, whose docstring is the reference of these keys; like every
section it reports its problems to the shared ``Problems`` and raises nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from indexer._toml import NAME_RE, Problems, Section, check_address
from indexer.decode import abi_problems


@dataclass(frozen=True, slots=True)
class FactorySpec:
    """Where a factory-made contract's addresses come from: ``parameter`` of ``event``."""

    contract: str
    event: str
    parameter: str


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One watched contract; ``address`` is None exactly when ``factory`` is set."""

    name: str
    abi_path: Path
    abi: tuple[dict[str, Any], ...]
    address: str | None
    start_block: int
    factory: FactorySpec | None


def _load_abi(path: Path, key: str, problems: Problems) -> tuple[dict[str, Any], ...] | None:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        problems.add(key, f"ABI file not found: {path}")
        return None
    except OSError as exc:
        problems.add(key, f"cannot read ABI file {path}: {exc.strerror}")
        return None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        problems.add(key, f"ABI file {path} is not valid JSON: {exc}")
        return None
    entries = doc.get("abi") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.add(key, f"ABI file {path} has no list of ABI entries (key 'abi')")
        return None
    bad = abi_problems(entries)
    for problem in bad:
        problems.add(key, f"ABI file {path}: {problem}")
    return None if bad else tuple(entries)


_CONTRACT_KEYS = ("name", "abi", "address", "factory", "start_block")


def _factory(sec: Section) -> FactorySpec | None:
    table = sec.get_table("factory")
    if table is None:
        return None
    fac = Section(table, sec.key("factory"), sec.problems, ("contract", "event", "parameter"))
    fac.require("contract", "event", "parameter")
    contract, event, parameter = (
        fac.get_str("contract"),
        fac.get_str("event"),
        fac.get_str("parameter"),
    )
    if contract is None or event is None or parameter is None:
        return None
    return FactorySpec(contract, event, parameter)


def _contract(
    sec: Section, base_dir: Path, abi_dir: Path
) -> tuple[ContractSpec | None, int | None]:
    """The contract, or None when unusable; and its start_block as given (None if absent)."""
    sec.require("name")
    name = sec.get_str("name")
    if name is not None and not NAME_RE.fullmatch(name):
        sec.problems.add(sec.key("name"), f"not a valid contract name: {json.dumps(name)}")
        name = None
    given_abi = sec.get_str("abi")
    abi_path = None
    if given_abi is not None:
        abi_path = base_dir / Path(given_abi).expanduser()
    elif name is not None:
        abi_path = abi_dir / f"{name}.json"
    abi = None
    if abi_path is not None:
        abi = _load_abi(abi_path, sec.key("abi" if given_abi else "name"), sec.problems)
    text = sec.get_str("address")
    address = None if text is None else check_address(text, sec.key("address"), sec.problems)
    factory = _factory(sec)
    if sec.has("address") == sec.has("factory"):
        sec.problems.add(sec.path, "give exactly one of `address` or `factory`")
    start = sec.get_int("start_block")
    if name is None or abi_path is None or abi is None:
        return None, start
    return ContractSpec(name, abi_path, abi, address, start or 0, factory), start


def _factory_problem(
    fac: FactorySpec, spec: ContractSpec, by_name: Mapping[str, ContractSpec]
) -> tuple[str, str] | None:
    """Why ``fac`` cannot produce addresses, as (factory key, message); None when it can."""
    maker = by_name.get(fac.contract)
    if maker is None or maker is spec:
        return "contract", f"no other contract named {fac.contract!r} on this chain"
    if maker.factory is not None:
        return "contract", f"{fac.contract} is itself factory-made (not supported)"
    events = [e for e in maker.abi if e.get("type") == "event" and e.get("name") == fac.event]
    if not events:
        return "event", f"{fac.contract}'s ABI has no event {fac.event!r}"
    for event in events:
        for arg in event.get("inputs") or []:
            if arg.get("name") == fac.parameter and arg.get("type") == "address":
                return None
    return "parameter", f"event {fac.event} has no address input named {fac.parameter!r}"


def read_contracts(sec: Section, base_dir: Path, abi_dir: Path) -> tuple[ContractSpec, ...]:
    """The ``contracts`` tables of the chain table ``sec``; problems go to ``sec.problems``.

    A given ``abi`` path is relative to ``base_dir`` (the config file's folder), else the ABI
    is ``<abi_dir>/<name>.json``. A factory-made contract without ``start_block`` starts at
    its factory's."""
    parsed: list[tuple[str, ContractSpec, int | None]] = []
    seen: dict[str, str] = {}
    broken = set()  # names of contracts already reported unusable (e.g. no ABI file)
    for path, table in sec.get_tables("contracts"):
        contract = Section(table, path, sec.problems, _CONTRACT_KEYS)
        spec, start = _contract(contract, base_dir, abi_dir)
        if spec is None:
            broken.add(table.get("name"))
            continue
        for kind, value in (("name", spec.name), ("address", spec.address)):
            if value is not None and (first := seen.get(f"{kind}:{value}")):
                sec.problems.add(f"{path}.{kind}", f"duplicate {kind}, as {first}")
            seen.setdefault(f"{kind}:{value}", path)
        parsed.append((path, spec, start))
    by_name = {spec.name: spec for _, spec, _ in parsed}
    out = []
    for path, spec, start in parsed:
        fac = spec.factory
        if fac is not None and fac.contract in broken and fac.contract not in by_name:
            pass  # its maker's problem is reported already
        elif fac is not None and (problem := _factory_problem(fac, spec, by_name)):
            sec.problems.add(f"{path}.factory.{problem[0]}", problem[1])
        elif fac is not None and start is None:
            out.append(replace(spec, start_block=by_name[fac.contract].start_block))
            continue
        out.append(spec)
    return tuple(out)
