"""The table runner (clj.tables): every row of every table resolves to a
config that passes the checks (full size and --tiny); the memory printed
before a row comes from the compiled programs and grows with batch size,
image size and seeds; a row that cannot fit is refused before anything is
trained; and ``python -m clj.tables <name> --tiny`` runs a row of every
table end to end and writes the table with the paper's number beside clj's."""
import json
import os
import subprocess
import sys

import pytest

from clj.config import validate
from clj.errors import ConfigError
from clj.tables import TABLES, format_table, row_config, run_table, tiny_config
from clj.tables.catalog import Row
from conftest import ROOT

# one cheap row per table for the end-to-end --tiny runs (--tiny keeps a class split's
# first two tasks)
TINY_ROWS = {"memo_cifar100_aligned": "Replay B50 Inc10", "memo_cifar100": "MEMO B0 Inc50",
             "memo_survey_aligned": "FOSTER B0 Inc10",
             "memo_imagenet100": "MEMO B50 Inc25", "memo_imagenet_aligned": "Replay ImageNet-100 B50 Inc5",
             "akr_cifar100": "AKR TFS N=5", "akr_imagenet100": "Base TFS N=5", "serena": "SERENA Split-MNIST",
             "nispa": "NISPA CIFAR-10", "derpp": "DER++ Seq-CIFAR-10 buffer 200", "ser": "ER-ACE + SER buffer 1000"}


def test_every_table_has_a_tiny_row_and_paper_numbers_per_metric():
    assert set(TINY_ROWS) == set(TABLES) == set(TINY_END_TO_END)
    for t in TABLES.values():
        assert TINY_ROWS[t.name] in [r.label for r in t.rows]
        labels = [r.label for r in t.rows]
        assert len(labels) == len(set(labels)), t.name
        for r in t.rows:
            assert len(r.paper) == len(t.metrics), (t.name, r.label)
            assert all(p is None or 0 <= p <= 100 for p in r.paper), (t.name, r.label)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_row_resolves_to_a_valid_config_full_size_and_tiny(name):
    for r in TABLES[name].rows:
        full = row_config(r, 3)
        validate(full)
        assert full.dataset != "synthetic"
        tiny = row_config(r, 3, tiny=True)
        validate(tiny)
        assert tiny.dataset == "synthetic" and tiny.method == full.method
        assert tiny.train.batch_size <= 16 and tiny.scenario.to_dict() == full.scenario.to_dict()


def test_tiny_keeps_the_image_shape_and_the_first_two_tasks_and_fills_a_batch():
    from clj.scenarios import class_split
    from clj.tables import DATASET_SHAPES, TINY_TASKS

    c = row_config(Row("x", "derpp_seq_tinyimg", "200"), 2, tiny=True)
    assert tuple(c.synthetic.image_shape) == DATASET_SHAPES["tiny_imagenet"][0] == (64, 64, 3)
    assert TINY_TASKS == 2 and c.synthetic.num_classes == 40  # 10 tasks of 20 classes -> the first 2
    assert class_split(40, int(c.scenario.init_cls), int(c.scenario.increment)) == [20, 20]
    assert c.synthetic.train_per_class * 20 >= c.train.batch_size  # 20 classes per task
    b = row_config(Row("x", "cil_imagenet1k", "memo,500,100,fair"), 1, tiny=True)  # B500 Inc100 -> 500 + 100
    assert b.synthetic.num_classes == 600 and tuple(b.synthetic.image_shape) == (224, 224, 3)
    d = row_config(Row("x", "serena_mnist", "official"), 2, tiny=True)  # data-incremental: every class kept
    assert d.synthetic.num_classes == 10
    with pytest.raises(ConfigError, match="no known image shape"):
        c.dataset = "tfds:foo"
        tiny_config(c)


def test_memory_comes_from_the_compiled_programs_and_grows_with_batch_image_and_seeds():
    from clj.train.memory import program_memory
    from conftest import small_config

    def mem(**over):
        import ml_collections

        c = small_config("er", **{"synthetic.image_shape": (8, 8, 1), "train.batch_size": 8, **over})
        c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(16,), dtype="float32"))
        c.dataset = "synthetic"
        return program_memory(c)

    base = mem()
    assert base.chunk_temp > 0 and base.chunk_peak > base.state + base.data and base.peak >= base.eval_peak
    bigger_batch = mem(**{"train.batch_size": 32})
    assert bigger_batch.chunk_peak > base.chunk_peak and bigger_batch.state == base.state
    bigger_image = mem(**{"synthetic.image_shape": (16, 16, 1)})
    assert bigger_image.data > base.data and bigger_image.peak > base.peak
    assert bigger_image.data > 2 * base.data  # 4x the pixels (plus the same index arrays)
    seeds = mem(num_seeds=3)
    assert seeds.state == 3 * base.state and seeds.chunk_peak > base.chunk_peak and seeds.runs == 3


def test_a_row_that_cannot_fit_is_refused_in_one_line_before_training(tmp_path):
    wd = tmp_path / "t"
    with pytest.raises(ConfigError) as e:
        run_table("derpp", rows=["DER++ Seq-CIFAR-10 buffer 200"], tiny=True, num_seeds=2, workdir=str(wd),
                  device_memory_gib=1e-4, log=lambda m: None)
    msg = str(e.value)
    assert "\n" not in msg and "DER++ Seq-CIFAR-10 buffer 200" in msg and "GiB per device" in msg
    assert "--num_seeds=1" in msg
    assert not wd.exists()  # nothing written, nothing trained


def test_unknown_table_row_and_executor_are_one_line():
    with pytest.raises(ConfigError, match="valid: akr_cifar100"):
        run_table("nope")
    with pytest.raises(ConfigError, match="is not a row of derpp"):
        run_table("derpp", rows=["DER++ nowhere"])
    with pytest.raises(ConfigError, match="executor"):
        run_table("derpp", executor="cloud")


def test_format_table_puts_clj_beside_the_paper():
    t = TABLES["derpp"]
    rows = [{"label": "DER++ Seq-CIFAR-10 buffer 200", "command": "python launch.py --config=x",
             "paper": [64.88, 91.92], "clj": [[60.0, 62.0], [90.0, 92.0]], "mean": [61.0, 91.0],
             "std": [1.4142, 1.4142]}]
    md = format_table(t, rows)
    line = [ln for ln in md.splitlines() if ln.startswith("| DER++")][0]
    assert "| 64.88 | 61.00 ± 1.41 (2) | -3.88 |" in line and "| 91.92 | 91.00 ± 1.41 (2) | -0.92 |" in line


# Every table's tiny row runs here end to end, longest first (alone, one seed, the
# suite's flags, 2 cores: about 66, 56, 32, 31, 24, 20, 18, 18, 17 and 14 s, SERENA 6 s).
# Together they cover every family and network of the tables: the class-IL family at
# 32x32 and 224x224 (ResNet-32, the ImageNet ResNet-18 and its transform, FOSTER), AKR,
# NISPA's phases, DER++, SERENA and SER's two networks at 288x384.
TINY_END_TO_END = ("ser", "memo_imagenet_aligned", "memo_survey_aligned", "memo_imagenet100", "akr_imagenet100",
                   "nispa", "memo_cifar100_aligned", "derpp", "akr_cifar100", "memo_cifar100", "serena")
# Seeds per tiny run: one for the convolutional rows.  On XLA:CPU, vmapped seeds of a
# convolutional network are a grouped convolution, about 10x the time of one seed
# (benchmarks/README.md); vmapped seeds are checked against separate runs elsewhere
# (test_loop, the four-device tests), and SERENA's MLP row here still runs two.
TINY_SEEDS = {"serena": 2}


@pytest.mark.parametrize("name", TINY_END_TO_END)
def test_tiny_table_runs_its_row_end_to_end(name, tmp_path):
    """``python -m clj.tables <name> --tiny --rows <row>`` (a subprocess, as a user runs it)."""
    wd = tmp_path / name
    p = subprocess.run([sys.executable, "-m", "clj.tables", name, "--tiny", "--rows", TINY_ROWS[name],
                        "--num_seeds", str(TINY_SEEDS.get(name, 1)), "--workdir", str(wd)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    assert "GiB per device" in p.stdout and "steps" in p.stdout  # the memory line before training
    out = json.load(open(wd / "table.json"))
    assert out["tiny"] and [r["label"] for r in out["rows"]] == [TINY_ROWS[name]]
    row = out["rows"][0]
    for vals in row["clj"]:  # every metric of every seed: a percentage
        assert len(vals) == TINY_SEEDS.get(name, 1) and all(0.0 <= v <= 100.0 for v in vals), row
    md = open(wd / "table.md").read()
    assert TINY_ROWS[name] in md and "not a result" in md and row["command"] in md


def test_docs_tables_md_lists_every_table_as_the_catalog_does():
    from clj.tables import catalog_markdown

    text = open(os.path.join(ROOT, "docs", "tables.md"), encoding="utf-8").read()
    assert text.endswith(catalog_markdown()), "regenerate: python -m clj.tables --list --markdown"
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    for name in TABLES:
        assert f"python -m clj.tables {name}" in readme, name
