"""Every bound that keeps untrusted specs from hanging archc or exhausting memory, in one place.

A spec (and the spec inside a ``.pt`` file) is data from anyone. Each limit here is far above what a
real network needs (GoogLeNet's spec is 6 KB, 200 layers, expressions of a dozen nodes) and far
below what would take more than a moment to refuse.
"""

from __future__ import annotations

MAX_SPEC_BYTES = 2 * 1024 * 1024     # a spec file (GoogLeNet's is ~6 KB)
MAX_YAML_NODES = 200_000             # YAML values after alias expansion (an alias bomb is refused)
MAX_YAML_DEPTH = 64                  # nesting of mappings and lists
MAX_EXPR_CHARS = 500                 # one expression's text
MAX_EXPR_NODES = 200                 # its syntax tree
MAX_EXPR_DEPTH = 32                  # and that tree's nesting
MAX_INT_BITS = 64                    # any integer an expression computes (or a spec writes)
MAX_DIM = 2**31 - 1                  # channels, sizes, kernels: what torch can index
MAX_LAYERS = 20_000                  # concrete layers once blocks and tables are expanded
MAX_BLOCK_NESTING = 32               # blocks using blocks
MAX_EXTENDS_DEPTH = 32               # a spec extending a spec extending ... (the zoo's deepest: 2)
MAX_NAME_CHARS = 200                 # a layer, block, parameter or output name
MAX_REGEX_CHARS = 200                # a torch.rename pattern
MAX_STAGES = 1_000                   # entries of `stages:` and `features:`
MAX_SWEEP_VARIANTS = 1_000             # combinations of one `archc sweep` grid (100 GoogLeNets take ~2 s)
