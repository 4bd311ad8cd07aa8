"""The Lightning callback: exact target sparsity, penalties in the loss, optimizer groups, phases and
checkpoints that resume to the same end as an uninterrupted run (CPU, tiny MLP, a few seconds)."""

from __future__ import annotations

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from secateurs.core.parametrize import find_parametrizations  # noqa: E402
from secateurs.errors import UsageError  # noqa: E402
from secateurs.integrations.lightning import SecateursPruning, masks_from_checkpoint  # noqa: E402

from integrations._lightning_helpers import Classifier, loader, trainer  # noqa: E402

SPARSITY = 0.75

#: One fitted-schedule baseline, one one-shot, the learned-mask methods and one with rounds and rewinds.
CASES = {
    "gmp": {},
    "magnitude": {},
    "continuous-sparsification": {},
    "dpp": {},
    "lottery": {"rounds": 2},
}

def _fit(name: str, epochs: int = 4, callbacks: tuple = (), ckpt_path=None, module=None, **options):
    module = module if module is not None else Classifier(schedule=True)
    pruning = SecateursPruning(name, sparsity=SPARSITY, submodule="model", **{**CASES.get(name, {}), **options})
    trainer(epochs, [pruning, *callbacks]).fit(module, loader(), ckpt_path=ckpt_path)
    return module, pruning


@pytest.mark.parametrize("name", list(CASES))
def test_prunes_the_mlp_to_exactly_the_target(name):
    module, pruning = _fit(name)
    masks = pruning.masks
    assert sorted(masks) == ["fc1.weight", "fc2.weight"]  # the classifier is not pruned by default
    assert not list(find_parametrizations(module))  # finalized: plain weights, masks baked in
    for key in masks:
        weight = module.model.get_parameter(key)
        assert int((weight == 0).sum()) == round(SPARSITY * weight.numel()), key  # count the zeros
        assert torch.equal(weight != 0, masks[key].full())


def test_mask_state_gets_its_own_group_without_weight_decay_and_the_schedule_drives_it():
    module, pruning = _fit("continuous-sparsification", finalize=False)
    optimizer = module.trainer.optimizers[0]
    scores = {id(p) for p in pruning.method.mask_parameters()}
    groups = [g for g in optimizer.param_groups if any(id(p) in scores for p in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert {id(p) for p in groups[0]["params"]} == scores
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4 and groups[0]["momentum"] == 0.9
    # The LambdaLR built before the group existed decays it like the weights' group (0.05 -> 0.025).
    assert groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"]) == pytest.approx(0.025, rel=0.1)
    # The method saw the rate of each step relative to the base rate: the last of 16 steps ran at 1 - 0.5 * 15/16.
    assert pruning.method.lr_scale == pytest.approx(1 - 0.5 * 15 / 16)


def test_gradient_accumulation_counts_optimizer_steps():
    steps = []

    class Count(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append(trainer.global_step)

    pruning = SecateursPruning("gmp", sparsity=SPARSITY, submodule="model", finalize=False)
    trainer(4, [pruning, Count()], accumulate_grad_batches=2).fit(Classifier(), loader())
    assert pruning.method.horizon.steps_per_epoch == 2 and pruning.method.horizon.total_steps == 8
    assert steps[-1] == 8 and pruning.method.hard_masks().sparsity() == pytest.approx(SPARSITY)


def test_penalty_is_added_to_the_loss_training_step_returns():
    seen = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            x, y = batch
            with torch.no_grad():
                task = torch.nn.functional.cross_entropy(pl_module(x), y)
            seen.append((float(outputs["loss"]), float(task)))

    module = Classifier(return_dict=True)
    pruning = SecateursPruning("continuous-sparsification", sparsity=SPARSITY, submodule="model", lam=1e-2,
                               finalize=False)
    penalties = []

    class Penalty(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            penalties.append(float(pruning.penalty()))

    trainer(2, [pruning, Penalty(), Record()]).fit(module, loader(batches=1))
    returned = seen[0][0]
    assert penalties[0] > 0
    # The returned loss is the task loss at the pre-step weights plus the penalty (recompute it).
    module2 = Classifier(return_dict=True)
    x, y = next(iter(loader(batches=1)))
    task0 = float(torch.nn.functional.cross_entropy(module2(x), y))
    assert returned == pytest.approx(task0 + penalties[0], rel=1e-5)
    assert "training_step" not in module.__dict__  # unwrapped after fit


@pytest.mark.parametrize(("name", "resume_after"), [("gmp", 3), ("dpp", 2), ("continuous-sparsification", 3),
                                                    ("lottery", 2), ("lottery", 3)])
def test_resume_from_the_lightning_checkpoint_ends_equal(name, resume_after, tmp_path):
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    full, pruning = _fit(name, callbacks=(saver,))
    # A run started differently (other initial weights) that resumes from the checkpoint after
    # ``resume_after`` epochs: weights, mask state, method state, optimizer, schedule and phase all
    # come from the checkpoint. Lottery: 3 phases of 1, 1, 2 epochs, so 2 resumes at a phase start
    # (prune + rewind from the saved snapshot, fresh optimizer) and 3 inside the last phase.
    ckpt = tmp_path / f"epoch={resume_after - 1}.ckpt"
    resumed, again = _fit(name, module=Classifier(seed=7, schedule=True), ckpt_path=ckpt)
    assert {k: m.mask for k, m in again.masks.items()}.keys() == pruning.masks.keys()
    for key in pruning.masks:
        assert torch.equal(again.masks[key].mask, pruning.masks[key].mask), key
    final, other = full.state_dict(), resumed.state_dict()
    assert final.keys() == other.keys()
    for key in final:
        assert torch.equal(final[key], other[key]), key
    # The checkpoint carries the masks; the last one's are the final masks.
    last = masks_from_checkpoint(tmp_path / "epoch=3.ckpt")
    assert all(torch.equal(last[k].mask, pruning.masks[k].mask) for k in pruning.masks)


def test_a_checkpoint_of_another_method_is_refused(tmp_path):
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    _fit("gmp", epochs=2, callbacks=(saver,))
    with pytest.raises(UsageError, match="sparsity"):
        pruning = SecateursPruning("gmp", sparsity=0.5, submodule="model")
        trainer(2, [pruning]).fit(Classifier(), loader(), ckpt_path=tmp_path / "epoch=1.ckpt")


def test_bad_input_is_a_usage_error_before_training():
    with pytest.raises(UsageError, match="unknown method"):
        SecateursPruning("no-such-method", sparsity=0.5)
    with pytest.raises(UsageError):
        SecateursPruning("gmp", sparsity=1.5)
    with pytest.raises(UsageError, match="max_steps"):
        pruning = SecateursPruning("gmp", sparsity=0.5)
        trainer(4, [pruning], max_steps=6).fit(Classifier(), loader())


def test_a_fit_stopped_early_warns_that_the_schedule_did_not_finish():
    pruning = SecateursPruning("gmp", sparsity=SPARSITY, submodule="model")
    with pytest.warns(UserWarning, match="did not finish"):
        trainer(4, [pruning, _StopAfter(2)]).fit(Classifier(), loader())
    assert pruning.masks.sparsity() < SPARSITY  # the ramp was cut short


class _StopAfter(pl.Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_each_phase_starts_with_a_fresh_optimizer_and_schedule_after_the_prune_and_rewind():
    seen = {}

    class Look(pl.Callback):  # runs after SecateursPruning's epoch start (callbacks run in order)
        def on_train_epoch_start(self, trainer, pl_module):
            optimizer = trainer.optimizers[0]
            seen[trainer.current_epoch] = (len(optimizer.state), optimizer.param_groups[0]["lr"],
                                           pruning.method.hard_masks().sparsity())

    pruning = SecateursPruning("lottery", sparsity=SPARSITY, submodule="model", rounds=2, finalize=False)
    trainer(4, [pruning, Look()]).fit(Classifier(schedule=True), loader())
    # Phases of 1, 1 and 2 epochs: momentum is gone and the LambdaLR is back at its first rate at
    # epochs 1 and 2, where the rounds prune to 1 - 0.25**(1/2) and 0.75; epoch 3 continues the phase.
    assert seen[1][:2] == (0, 0.05) and seen[2][:2] == (0, 0.05)
    assert seen[3][0] > 0 and seen[3][1] < 0.05
    assert [round(seen[e][2], 3) for e in range(4)] == [0.0, 0.5, 0.75, 0.75]


class _ManualClassifier(Classifier):
    """Manual optimization: the module adds the penalty itself; the callback wraps nothing."""

    def __init__(self, pruning: SecateursPruning) -> None:
        super().__init__(weight_decay=0.0)
        self.automatic_optimization = False
        self.pruning = pruning

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        extra = self.pruning.penalty()
        optimizer.zero_grad()
        self.manual_backward(loss if extra is None else loss + extra)
        optimizer.step()


@pytest.mark.parametrize("name", ["gmp", "continuous-sparsification"])
def test_manual_optimization_steps_the_method_too(name):
    pruning = SecateursPruning(name, sparsity=SPARSITY, submodule="model")
    module = _ManualClassifier(pruning)
    trainer(4, [pruning]).fit(module, loader())
    assert pruning.method.horizon.total_steps == 16 and module.trainer.global_step == 16
    for key in pruning.masks:
        weight = module.model.get_parameter(key)
        assert int((weight == 0).sum()) == round(SPARSITY * weight.numel()), key
