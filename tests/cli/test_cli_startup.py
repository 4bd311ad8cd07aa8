"""The command line answers ``--help``, ``list`` and argument errors without importing torch.

Importing torch takes seconds; these commands only need names and help text, which come from the
generated catalogue (:mod:`secateurs.cli.catalogue`). The catalogue must equal what the code says.
"""

from __future__ import annotations

import subprocess
import sys

from secateurs.cli.catalogue import build_catalogue, catalogue

LIGHT_COMMANDS = [
    ["--help"],
    ["list", "methods"],
    ["list", "methods", "cs"],
    ["list", "settings"],
    ["list", "models"],
    ["list", "datasets"],
    ["list", "granularities"],
    ["list", "allocators"],
    ["list", "costs"],
    ["prune", "--method", "gmp", "--help"],
    ["train", "--help"],
    ["shrink", "--help"],
    ["bench", "--help"],
    ["prune", "--sparsity", "abc", "--out", "x"],  # an argument error: exit 2, one line
    ["list", "methods", "no-such-method"],        # unknown name: exit 2, one line
]

CHECK = """
import contextlib, io, json, sys
from secateurs.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    results.append([argv, code, "torch" in sys.modules])
print(json.dumps(results))
"""


def test_help_list_and_argument_errors_do_not_import_torch():
    import json

    out = subprocess.run([sys.executable, "-c", CHECK, json.dumps(LIGHT_COMMANDS)], capture_output=True,
                         text=True, check=True)
    results = json.loads(out.stdout)
    assert [r[0] for r in results] == LIGHT_COMMANDS
    imported = [argv for argv, _, torch_loaded in results if torch_loaded]
    assert not imported, f"these imported torch: {imported}"
    codes = {" ".join(argv): code for argv, code, _ in results}
    assert codes["prune --sparsity abc --out x"] == 2
    assert codes["list methods no-such-method"] == 2
    assert all(code == 0 for cmd, code in codes.items() if "abc" not in cmd and "no-such" not in cmd)


def test_import_secateurs_is_light_and_resolves_public_names():
    check = ("import sys, secateurs; assert 'torch' not in sys.modules; "
             "from secateurs import MaskSet, build_method, load_shrunk; import secateurs.core.masks as m; "
             "assert MaskSet is m.MaskSet and 'torch' in sys.modules; "
             "assert set(secateurs.__all__) == set(secateurs._LAZY) | {'SecateursError', 'UsageError', '__version__'}; "
             "assert set(secateurs.__all__) <= set(dir(secateurs)); print('ok')")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_every_public_name_resolves():
    import secateurs

    for name in secateurs.__all__:
        assert getattr(secateurs, name) is not None, name


def test_catalogue_matches_the_code():
    # Changed a method, an option or a setting? Regenerate: python -m secateurs.cli.catalogue
    assert catalogue() == build_catalogue(), "catalogue.json is stale: run `python -m secateurs.cli.catalogue`"
