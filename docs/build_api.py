"""Builds clj's API reference from its docstrings: HTML pages in docs/api/.

    pip install -e '.[docs]'
    python docs/build_api.py              # then open docs/api/index.html
    python docs/build_api.py --out DIR    # elsewhere

Every module of the clj package is documented, including those a package's
``__all__`` leaves out, with docstrings read in the Google style.  Any
warning while building (a module that cannot be imported, a docstring pdoc
cannot parse, a link it cannot resolve) is printed and fails the build with
exit status 1, so a broken docstring is caught like a broken test.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_names(package: str = "clj") -> list[str]:
    """Every module and package under ``package`` (from the source tree, no
    import), sorted; ``__main__`` modules are left out."""
    names = []
    base = os.path.join(ROOT, package)
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")) and
                         os.path.exists(os.path.join(folder, d, "__init__.py")))
        rel = os.path.relpath(folder, ROOT).replace(os.sep, ".")
        for f in sorted(files):
            if f == "__init__.py":
                names.append(rel)
            elif f.endswith(".py") and not f.startswith("_"):
                names.append(f"{rel}.{f[:-3]}")
    return sorted(names)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "api"), help="output folder (default docs/api)")
    args = ap.parse_args(argv)
    try:
        import pdoc
        import pdoc.render
    except ImportError:
        print("error: pdoc is not installed; pip install -e '.[docs]' (or pip install pdoc)", file=sys.stderr)
        return 2
    sys.path.insert(0, ROOT)  # this checkout's clj, whatever else is installed
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    pdoc.render.configure(docformat="google", footer_text="clj", show_source=True)
    modules = module_names()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=__import__("pathlib").Path(args.out))
    # Naming every module repeats the ones a package without __all__ adds itself: pdoc says so, harmlessly.
    ours = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning,
                                                             FutureWarning))
            and not str(w.message).startswith("The module specification")]
    for w in ours:
        print(f"warning: {w.message} ({w.filename}:{w.lineno})", file=sys.stderr)
    if ours:
        print(f"error: {len(ours)} warning(s) while building the API reference; fix them.", file=sys.stderr)
        return 1
    print(f"API reference of {len(modules)} modules written to {os.path.relpath(args.out)}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
