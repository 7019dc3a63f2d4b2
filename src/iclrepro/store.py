"""Content-addressed store: ids, source fingerprints, atomic writes, checked readers.

Every result lives under a path keyed by an id: the hash of its fully resolved spec
together with a fingerprint of the package source the producing stage imports
(DESIGN §3). Writers go through a temporary file and an atomic rename, so a killed job
never leaves a file that a later run mistakes for a finished one.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import io
import json
import os
import secrets
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from iclrepro.errors import IclreproError

if TYPE_CHECKING:  # pyarrow and torch are imported where they are used: planning must stay light
    import pyarrow as pa
    from torch import nn

PACKAGE_ROOT = Path(__file__).resolve().parent
ID_LENGTH = 16
SPEC_METADATA_KEY = b"iclrepro.spec"
ID_METADATA_KEY = b"iclrepro.id"


class StoreError(IclreproError, RuntimeError):
    """A stored file is missing, unreadable or does not match what was asked for."""


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace: equal specs give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(text: str, length: int = ID_LENGTH) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def content_id(spec: dict, fingerprint: str) -> str:
    """Id of a stored result: its resolved spec plus the source fingerprint of its stage."""
    return digest(canonical_json({"spec": spec, "source": fingerprint}))


def identity_id(record: dict) -> str:
    """Id from an identity record: spec, input ids and name, hashed with the source fingerprint."""
    keyed = {"spec": record["spec"], "inputs": record["inputs"], "name": record["name"]}
    return content_id(keyed, record["source"])


# ---------------------------------------------------------------------------
# Source fingerprints
# ---------------------------------------------------------------------------

def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "iclrepro":
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _syntax_tree(source: str) -> ast.Module:
    """A source file parsed once: its imports and its code (code_text) are both read from it."""
    return ast.parse(source)


def _imported_modules(path: Path, module: str) -> set[str]:
    """Names of the iclrepro modules that one source file imports (absolute or relative)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    try:
        tree = _syntax_tree(path.read_text())
    except SyntaxError as err:
        err.filename = str(path)   # parsed from its text, which names no file
        raise
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("iclrepro")}


@functools.cache
def source_closure(module: str) -> tuple[Path, ...]:
    """Source files of `module` and of every iclrepro module it imports, transitively."""
    seen: dict[str, Path] = {}
    stack = [module]
    while stack:
        name = stack.pop()
        path = _module_file(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        stack.extend(_imported_modules(path, name))
        # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        parent = name.rpartition(".")[0]
        if parent:
            stack.append(parent)
    if module not in seen:
        raise StoreError(f"no source file for module {module!r}")
    return tuple(sorted(set(seen.values())))


def _string_statement_alone(node: ast.Expr, lines: list[str]) -> bool:
    """Whether a string statement (a docstring, say) has its rows to itself (ast columns count bytes)."""
    before = lines[node.lineno - 1].encode()[: node.col_offset]
    after = lines[node.end_lineno - 1].encode()[node.end_col_offset:]
    return not before.strip() and not after.split(b"#")[0].strip()


@functools.cache
def code_text(source: str) -> str:
    """The rows of a source file that run: comments, docstrings (string statements), blank rows and
    trailing spaces cut, so that editing those changes no id. A row that ends inside a string
    literal stays as it is (its spaces are data). Cut by token and node positions, not taken
    from the ast's dump or unparsed text, whose form changes between Python versions."""
    lines = list(io.StringIO(source))
    comment_at = {token.start[0]: token.start[1] for token in tokenize.generate_tokens(io.StringIO(source).readline)
                  if token.type == tokenize.COMMENT}
    dropped, in_string = set(), set()
    for node in ast.walk(_syntax_tree(source)):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                and _string_statement_alone(node, lines)):
            dropped.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, (ast.Constant, ast.JoinedStr)):
            in_string.update(range(node.lineno, node.end_lineno))  # each row but the last ends inside it
    kept = []
    for row, line in enumerate(lines, start=1):
        code = line[: comment_at.get(row, len(line))].rstrip()
        if row in in_string and row not in dropped:
            kept.append(line)
        elif code and row not in dropped:
            kept.append(code + "\n")
    return "".join(kept)


@functools.cache
def fingerprint(module: str) -> str:
    """Hash of the code a stage depends on: changes to other modules, and to comments,
    docstrings and blank rows anywhere, leave it unchanged."""
    h = hashlib.sha256()
    for path in source_closure(module):
        h.update(str(path.relative_to(PACKAGE_ROOT)).encode())
        h.update(code_text(path.read_text()).encode())
    return h.hexdigest()[:ID_LENGTH]


# ---------------------------------------------------------------------------
# Paths of the store, under the results directory
# ---------------------------------------------------------------------------

CELL_FILES = ("spec.json", "model.pt", "train.parquet", "metrics.parquet")


@dataclass(frozen=True)
class Layout:
    """Where each kind of node writes, under the results directory."""

    root: str

    def data(self, node_id: str) -> str:
        return f"{self.root}/data/{node_id}.parquet"

    def cell_dir(self, node_id: str) -> str:
        return f"{self.root}/cells/{node_id}"

    def cell(self, node_id: str, file: str = "metrics.parquet") -> str:
        return f"{self.cell_dir(node_id)}/{file}"

    def theory(self, paper: str, name: str) -> str:
        return f"{self.root}/theory/{paper}/{name}.parquet"

    def tidy(self, paper: str, name: str) -> str:
        return f"{self.root}/figures/{paper}/{name}.parquet"

    def figure(self, paper: str, name: str, ext: str) -> str:
        return f"{self.root}/figures/{paper}/{name}.{ext}"

    def claims(self, paper: str) -> str:
        return f"{self.root}/claims/{paper}.parquet"

    def claims_table(self, ext: str = "md") -> str:
        return f"{self.root}/claims.{ext}"

    def index(self, node_id: str) -> str:
        return f"{self.root}/index/{node_id}.json"

    def batch(self, stage: str, paper: str, batch_id: str) -> str:
        return f"{self.root}/batches/{stage}/{paper}/{batch_id}.json"

    def log(self, stage: str, node_id: str) -> str:
        return f"{self.root}/logs/{stage}/{node_id}.log"

    def outputs(self, node) -> list[str]:
        """The files a node produces (the last one is written last: its presence means done)."""
        if node.stage == "data":
            return [self.data(node.id)]
        if node.stage == "train":
            return [self.cell(node.id, file) for file in CELL_FILES]
        if node.stage == "theory":
            return [self.theory(node.paper, node.name)]
        if node.stage == "tidy":
            return [self.tidy(node.paper, node.name)]
        if node.stage == "draw":
            return [self.figure(node.paper, node.name, ext) for ext in ("png", "pdf", "json")]
        return [self.claims(node.paper)]

    def done_marker(self, node) -> str:
        return self.outputs(node)[-1]


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique across processes and hosts: two cluster jobs may write the same entry at once
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict:
    """A JSON object (every JSON file the store writes is one)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise StoreError(f"{path}: not a JSON object")
    return value


# ---------------------------------------------------------------------------
# Parquet with the generating spec in the file's key-value metadata
# ---------------------------------------------------------------------------

# Rows per Parquet row group, and per batch when reading: a reader holds a row group's column
# chunks while it decodes them, so a paper-scale test set written as one group (20,000 prompts,
# 278 MB as a table) took 1.28 GB to read; in groups of this many rows, 0.5 GB.
ROW_GROUP_ROWS = 1024


def write_parquet(table: pa.Table, path, spec: dict | None = None, content: str | None = None):
    """Write `table` atomically, recording `spec` (and its id `content`) in the metadata."""
    import pyarrow.parquet as pq

    metadata = dict(table.schema.metadata or {})
    if spec is not None:
        metadata[SPEC_METADATA_KEY] = canonical_json(spec).encode()
    if content is not None:
        metadata[ID_METADATA_KEY] = content.encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)


def read_parquet(path, content: str | None = None) -> pa.Table:
    """Read a Parquet file, checking that its metadata id equals `content` when given.

    Raises StoreError naming the file when it is missing, corrupted, or does not match.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: missing")
    try:
        with pq.ParquetFile(path, pre_buffer=False) as file:   # pre-buffering holds every group at once
            table = pa.Table.from_batches(file.iter_batches(batch_size=ROW_GROUP_ROWS), schema=file.schema_arrow)
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"{path}: unreadable Parquet ({err})") from None
    if content is not None and (stored := parquet_id(table)) != content:
        raise StoreError(f"{path}: metadata id {stored or '(none)'} does not match {content}")
    return table


def parquet_id(table: pa.Table) -> str:
    """The node id stored in a table's metadata ('' when none is)."""
    return (table.schema.metadata or {}).get(ID_METADATA_KEY, b"").decode()


def check_columns(table: pa.Table, schema: pa.Schema, path) -> None:
    """Raise StoreError naming `path` unless `table` has every column of `schema`, typed alike."""
    for field in schema:
        if field.name not in table.schema.names:
            raise StoreError(f"{path}: column {field.name!r} missing")
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise StoreError(f"{path}: column {field.name!r} has type {actual}, expected {field.type}")


def parquet_spec(table: pa.Table, path) -> dict:
    """The generating spec stored in a table's metadata."""
    raw = (table.schema.metadata or {}).get(SPEC_METADATA_KEY)
    if raw is None:
        raise StoreError(f"{path}: no generating spec in the Parquet metadata")
    return json.loads(raw)


def read_stored_set(path, content: str | None, settings, schema, what: str,
                    rows: str | None = None) -> tuple[pa.Table, dict, object]:
    """A stored data set: its table, its spec and `settings(spec)`, with columns checked against
    `schema(settings)` and, if `rows` names a spec key, the row count against spec[rows]. Every
    mismatch raises StoreError naming the file; `what` says what it should be."""
    table = read_parquet(path, content=content)
    spec = parquet_spec(table, path)
    try:
        made = settings(spec)
        expected_rows = spec[rows] if rows else table.num_rows
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"{path}: not {what} ({err})") from None
    check_columns(table, schema(made), path)
    if table.num_rows != expected_rows:
        raise StoreError(f"{path}: {table.num_rows} rows, the spec says {expected_rows}")
    return table, spec, made


# ---------------------------------------------------------------------------
# Model files: plain state dicts and the spec, loadable with weights_only=True
# ---------------------------------------------------------------------------

def save_model(state: dict, spec: dict, path, snapshots: dict | None = None) -> None:
    """A model file: the final state dict, the spec, and optional {step: state} snapshots."""
    import torch

    with atomic_path(path) as tmp:
        torch.save({"spec": canonical_json(spec), "state": state, "snapshots": snapshots or {}}, tmp)


def load_model(path) -> tuple[dict, dict]:
    """Return (state, spec) of a model file; never unpickles arbitrary objects."""
    blob = _load_blob(path)
    return blob["state"], json.loads(blob["spec"])


def check_cell(cell_dir, node_id: str, spec: dict) -> None:
    """A stored cell is whole: each file reads, carries the id `node_id`, and records `spec`
    (compared as JSON, the form every file stores it in)."""
    cell_dir, wanted = Path(cell_dir), canonical_json(spec)
    cell = read_json(cell_dir / "spec.json")
    if cell.get("id") != node_id or canonical_json(cell.get("spec")) != wanted:
        raise StoreError(f"{cell_dir / 'spec.json'}: id or spec differs from the identity record")
    for name in ("train.parquet", "metrics.parquet"):
        read_parquet(cell_dir / name, content=node_id)
    if canonical_json(load_model(cell_dir / "model.pt")[1]) != wanted:
        raise StoreError(f"{cell_dir / 'model.pt'}: its spec differs from the identity record")


def load_trained(cell_dir, build) -> tuple[dict, nn.Module, dict[int, dict]]:
    """(spec, model, snapshots) of a trained cell: `build(spec)` filled with the stored weights, and
    the {step: state dict} snapshots kept during training (empty if none were asked for)."""
    path = Path(cell_dir) / "model.pt"
    blob = _load_blob(path)
    spec = json.loads(blob["spec"])
    model = build(spec)
    try:
        model.load_state_dict(blob["state"])
    except RuntimeError as err:
        raise StoreError(f"{path}: weights do not fit the model of its spec ({err})") from None
    return spec, model, blob.get("snapshots", {})


def _load_blob(path) -> dict:
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: missing")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise StoreError(f"{path}: unreadable model file ({err})") from None
    if not isinstance(blob, dict) or not {"state", "spec"} <= blob.keys():
        raise StoreError(f"{path}: not an iclrepro model file (no state and spec)")
    return blob
