"""Compile contracts/**/*.sol into abis/<ContractName>.json (ABI, creation bytecode, compiler).

Uses the pinned solc-js and OpenZeppelin from .tools/node_modules, through solc's standard JSON
interface, with fixed settings so that the output depends on the sources only. Each artifact
carries a ``sourceHash`` (see :func:`source_hash`) so that a test can tell cheaply, without a
compiler, that abis/ is stale. ``--check`` compiles in memory and exits 1 when abis/ differs.

    .venv/bin/python scripts/compile_contracts.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = ROOT / "contracts"
ABIS_DIR = ROOT / "abis"
NODE_MODULES = ROOT / ".tools" / "node_modules"
OZ_PACKAGE = NODE_MODULES / "@openzeppelin" / "contracts" / "package.json"
OZ_PREFIX = "@openzeppelin/contracts/"

# Fixed settings: cancun keeps the bytecode deployable on every chain we target (solc 0.8.30
# defaults to prague), and no metadata hash keeps bytecode independent of comments and paths.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
}

# Resolves @openzeppelin imports from .tools/node_modules; reads input on stdin.
_NODE_COMPILE = r"""
const fs = require("fs");
const path = require("path");
const solc = require(path.join(process.argv[1], "solc"));
const input = fs.readFileSync(0, "utf8");
function findImports(p) {
  const file = path.join(process.argv[1], p);
  if (fs.existsSync(file)) return { contents: fs.readFileSync(file, "utf8") };
  return { error: "not found: " + p };
}
process.stdout.write(JSON.stringify({
  version: solc.version(),
  output: JSON.parse(solc.compile(input, { import: findImports })),
}));
"""

_CONTRACT_RE = re.compile(r"^\s*contract\s+(\w+)", re.MULTILINE)


def source_files() -> list[Path]:
    """Every Solidity source under contracts/, sorted by relative path."""
    return sorted(CONTRACTS_DIR.rglob("*.sol"), key=lambda p: p.relative_to(ROOT).as_posix())


def openzeppelin_version() -> str:
    """The installed OpenZeppelin version (part of the source hash: its code is compiled in)."""
    return str(json.loads(OZ_PACKAGE.read_text())["version"])


def source_hash() -> str:
    """sha256 over each contract source (relative path and bytes, in path order), the
    OpenZeppelin version and the compiler settings; changes whenever abis/ must be rebuilt."""
    h = hashlib.sha256()
    for path in source_files():
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    h.update(f"openzeppelin={openzeppelin_version()}\0".encode())
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    return h.hexdigest()


def expected_contracts() -> dict[str, str]:
    """Concrete contract name -> relative source path, found by a regex (no compiler needed).
    Interfaces, libraries and abstract contracts are not deployed and get no artifact."""
    found: dict[str, str] = {}
    for path in source_files():
        rel = path.relative_to(ROOT).as_posix()
        for name in _CONTRACT_RE.findall(path.read_text()):
            if name in found:
                raise SystemExit(f"contract {name} defined twice ({found[name]}, {rel})")
            found[name] = rel
    return found


def compile_all() -> dict[str, dict[str, Any]]:
    """Compile every source; return artifact dicts keyed by contract name."""
    sources = {p.relative_to(ROOT).as_posix(): {"content": p.read_text()} for p in source_files()}
    std_input = {
        "language": "Solidity",
        "sources": sources,
        "settings": {**SETTINGS, "remappings": [f"{OZ_PREFIX}={OZ_PREFIX}"]},
    }
    proc = subprocess.run(
        ["node", "-e", _NODE_COMPILE, str(NODE_MODULES)],
        input=json.dumps(std_input),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
    for err in output.get("errors", []):
        print(err.get("formattedMessage", err["message"]), file=sys.stderr)
    if errors:
        raise SystemExit("compilation failed")
    digest = source_hash()
    wanted = expected_contracts()
    artifacts: dict[str, dict[str, Any]] = {}
    for name, rel in wanted.items():
        compiled = output["contracts"][rel][name]
        artifacts[name] = {
            "contractName": name,
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "compiler": f"solc {result['version']}",
            "sourceHash": digest,
        }
    return artifacts


def render(artifact: dict[str, Any]) -> str:
    """The exact file content of an artifact (stable, diff-friendly)."""
    return json.dumps(artifact, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if abis/ is stale")
    args = parser.parse_args(argv)
    artifacts = compile_all()
    wanted = {f"{name}.json": render(a) for name, a in artifacts.items()}
    present = {p.name for p in ABIS_DIR.glob("*.json")}
    if args.check:
        stale = sorted(
            name
            for name, text in wanted.items()
            if not (ABIS_DIR / name).exists() or (ABIS_DIR / name).read_text() != text
        )
        extra = sorted(present - wanted.keys())
        for name in stale:
            print(f"stale: abis/{name}", file=sys.stderr)
        for name in extra:
            print(f"no source: abis/{name}", file=sys.stderr)
        if stale or extra:
            print("run: .venv/bin/python scripts/compile_contracts.py", file=sys.stderr)
            return 1
        print(f"abis/ up to date ({len(wanted)} contracts)")
        return 0
    ABIS_DIR.mkdir(exist_ok=True)
    for name in sorted(present - wanted.keys()):
        (ABIS_DIR / name).unlink()
    for name, text in wanted.items():
        (ABIS_DIR / name).write_text(text)
    print(f"wrote {len(wanted)} artifacts to abis/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
