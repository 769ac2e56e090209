"""The ``config.nispa`` block (NISPA, Gurbuz & Dovrolis, ICML 2022) and the blocks of its sparse
baselines, ``config.stl`` (STL, STL-iso) and ``config.clnp`` (CLNP).  JAX-free."""
from __future__ import annotations

from clj.methods.sections import Section, at_least, choice, in_interval, need, positive

NISPA_MASK_INITS = ("exact", "bernoulli")
NISPA_TASK_IL_RULES = ("multiply", "restrict")


def _check_nispa(v, config) -> None:
    in_interval("nispa", v, "density", "(0, 1]")
    choice("nispa", "mask_init", v["mask_init"], NISPA_MASK_INITS)
    e = int(v["phase_epochs"])
    at_least("nispa", v, 1, "phase_epochs")
    need(float(config.train.epochs) >= e, f"train.epochs={config.train.epochs} is less than one phase "
         f"(nispa.phase_epochs={e}); set train.epochs = max_phases * phase_epochs.")
    in_interval("nispa", v, "val_fraction", "(0, 1)")
    at_least("nispa", v, 1, "eval_chunk")
    positive("nispa", v, "k")
    at_least("nispa", v, 1, "min_phases")
    need(int(v["select_samples"]) >= 0,
         f"nispa.select_samples={v['select_samples']} is invalid: 0 (all) or > 0.")
    need(config.optim.name == "adam",
         f"optim.name={config.optim.name!r} is not supported by nispa; valid: 'adam'.")
    need(config.scenario.kind in ("task_il", "class_il"),
         f"scenario.kind={config.scenario.kind!r} is not supported by nispa; valid: 'task_il' "
         "(or 'class_il' data evaluated task-incrementally).")
    choice("nispa", "task_il_rule", v["task_il_rule"], NISPA_TASK_IL_RULES)


NISPA = Section(
    "nispa",
    dict(density=0.2, a_f=0.75, k=30.0, phase_epochs=5, max_phases=26, min_phases=3, tau_stop=5.0,
         val_fraction=0.1, select_samples=0, mask_init="exact", dense_first_conv=True, eval_chunk=512,
         task_il_rule="multiply"),
    dict(density="fraction of connections present in each sparse layer (first conv dense unless "
                 "dense_first_conv=False)",
         a_f="accuracy drop (points) below the best earlier phase that stops a task",
         k="cosine schedule constant of p_t = 100 (1 + cos(pi t / k)) / 2 (Eq. 3)",
         phase_epochs="epochs per phase (Adam re-created every phase)",
         max_phases="phases per task at most (train.epochs = max_phases * phase_epochs)",
         min_phases="phases before the a_f stopping rule may fire",
         tau_stop="p_t (percent) at or below which a task stops",
         val_fraction="fraction of each task's training examples held out for validation (by content hash)",
         select_samples="training examples the unit selection averages over (0 = all)",
         mask_init="initial masks: 'exact' (exact counts) or 'bernoulli' (official draw)",
         dense_first_conv="keep the first conv layer dense",
         eval_chunk="examples per vectorised forward when scoring validation/selection data",
         task_il_rule="task-IL test rule: 'multiply' (the official code: logits x 0/1 task mask, argmax over all "
                      "classes) or 'restrict' (argmax over the task's classes)"),
    _check_nispa)


# ---------------------------------------------------------------- NISPA's sparse baselines
def _check_holdout_common(name: str, v, config) -> None:
    """Checks shared by the ``stl`` and ``clnp`` blocks."""
    in_interval(name, v, "val_fraction", "(0, 1)")
    at_least(name, v, 1, "eval_chunk")
    choice(name, "task_il_rule", v["task_il_rule"], NISPA_TASK_IL_RULES)
    need(config.optim.name == "adam",
         f"optim.name={config.optim.name!r} is not supported by {name}; valid: 'adam'.")
    need(config.scenario.kind in ("task_il", "class_il"),
         f"scenario.kind={config.scenario.kind!r} is not supported by {name}; valid: 'task_il' "
         "(or 'class_il' data evaluated task-incrementally).")
    need(config.model.name in ("nispa_mlp", "nispa_conv"),
         f"model.name={config.model.name!r} is not supported by {name}; valid: 'nispa_mlp', 'nispa_conv'.")


def _check_stl(v, config) -> None:
    in_interval("stl", v, "density", "(0, 1]")
    choice("stl", "mask_init", v["mask_init"], NISPA_MASK_INITS)
    _check_holdout_common("stl", v, config)


STL = Section(
    "stl",
    dict(density=0.2, mask_init="exact", dense_first_conv=True, val_fraction=0.1, eval_chunk=512,
         task_il_rule="multiply"),
    dict(density="NISPA's connection density; method 'stl' gives every task's network this density, "
                 "'stl_iso' splits each layer's connection count evenly over the tasks (density / tasks)",
         mask_init="per-task masks: 'exact' (exact counts) or 'bernoulli' (the authors' independent draws)",
         dense_first_conv="keep the first conv layer dense in every task's network",
         val_fraction="fraction of each task's training examples held out to pick the best epoch",
         eval_chunk="examples per vectorised forward when scoring the hold-out",
         task_il_rule="task-IL test rule: 'multiply' (the authors' code) or 'restrict'"),
    _check_stl)


def _check_clnp(v, config) -> None:
    at_least("clnp", v, 0, "l1_alpha", "m_perc")
    positive("clnp", v, "theta_step")
    at_least("clnp", v, 1, "max_thetas")
    _check_holdout_common("clnp", v, config)


CLNP = Section(
    "clnp",
    dict(l1_alpha=1e-5, m_perc=0.5, theta_step=0.02, max_thetas=4096, val_fraction=0.1, eval_chunk=512,
         task_il_rule="multiply"),
    dict(l1_alpha="weight of the L1 penalty (sum of |parameter| over the whole network) in the training loss",
         m_perc="graceful forgetting: the accuracy (points) on the hold-out that pruning may cost",
         theta_step="step of the activation threshold theta = 0, step, 2 step, ... tried in order",
         max_thetas="at most this many thresholds are tried per task (a static bound of the search loop)",
         val_fraction="fraction of each task's training examples held out (best epoch, pruning accuracy)",
         eval_chunk="examples per vectorised forward when scoring the hold-out or the activations",
         task_il_rule="task-IL test rule: 'multiply' (the authors' code) or 'restrict'"),
    _check_clnp)
