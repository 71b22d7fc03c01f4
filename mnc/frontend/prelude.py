"""The built-in blocks: the definitions in prelude.mnet, parsed and checked once."""

from __future__ import annotations

import functools
from pathlib import Path

from mnc.errors import Collector
from mnc.frontend.ast import BlockDef
from mnc.frontend.blocks import check_block
from mnc.frontend.parser import parse_text


@functools.lru_cache(maxsize=1)
def builtin_blocks() -> dict[str, BlockDef]:
    path = Path(__file__).with_name("prelude.mnet")
    ast = parse_text(path.read_text(encoding="utf-8"), "<prelude>")
    problems = Collector()
    for defn in ast.blocks:
        check_block(defn, problems)
    problems.raise_if_any()
    return {defn.name: defn for defn in ast.blocks}
