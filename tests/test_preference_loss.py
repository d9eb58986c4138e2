"""ForgeLLM's DPO, ORPO and SimPO losses and gradients equal TRL's on the same tiny model and batch.

TRL version: 1.16.0 (a test dependency, pinned in requirements.lock; the assertion below says so
if another is installed). What each comparison runs on TRL's side:

- DPO: a real ``trl.DPOTrainer`` and its ``_compute_loss`` on the batch (``loss_type="sigmoid"``):
  with a LoRA adapter TRL takes the reference from the same model with the adapter disabled, as
  ForgeLLM does; for full fine-tuning both get the reference log-probabilities computed before
  training from the starting model (ForgeLLM's ``sequence_logps``, its stored path; TRL's
  ``precompute_ref_log_probs``, its ``ref_chosen_logps``/``ref_rejected_logps`` inputs).
  TRL 1.16's sigmoid loss has no label smoothing; ``dpo_label_smoothing`` is conservative DPO
  (``-(1-e) logsig(z) - e logsig(-z)``, TRL's former sigmoid loss and its "aot" loss on a single
  pair), compared with TRL's aot loss at batch size 1.
- SimPO: ``trl.experimental.cpo.CPOTrainer.cpo_loss`` (``loss_type="simpo"``, ``cpo_alpha=0``) on
  log-probabilities averaged by TRL's own ``get_batch_logps``.
- ORPO: ``trl.experimental.orpo.ORPOTrainer.odds_ratio_loss`` (its ``beta`` is ForgeLLM's
  ``orpo_lambda``) plus the chosen response's mean cross-entropy. TRL's ORPO also counts the prompt
  tokens in that cross-entropy; ForgeLLM trains on response tokens only (as everywhere), so TRL's
  term is computed here with the prompt labels masked, at batch size 1 where TRL's token mean over
  the batch and ForgeLLM's mean per pair coincide.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from forgellm.data.sequences import PairBatch
from forgellm.models.resolve import describe
from forgellm.training.config import TrainingConfig
from forgellm.training.torch_trainable import TorchTrainable

trl = pytest.importorskip("trl")
TRL_VERSION = "1.16.0"
TOLERANCE = dict(atol=1e-4, rtol=1e-4)
LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


def test_the_stated_trl_version_is_installed():
    assert trl.__version__ == TRL_VERSION


def pair_batch(pairs: int, *, seed: int = 0, length: int = 14, prompt: int = 5) -> PairBatch:
    """Random pairs: a shared prompt, responses of different lengths, right padding."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((pairs, 2, length), dtype=np.int32)
    mask = np.zeros((pairs, 2, length), dtype=np.uint8)
    for i in range(pairs):
        tokens[i, :, :prompt] = rng.integers(100, 2000, size=prompt)
        for side in (0, 1):
            end = int(rng.integers(prompt + 2, length + 1))
            tokens[i, side, prompt:end] = rng.integers(100, 2000, size=end - prompt)
            mask[i, side, prompt:end] = 1
    return PairBatch(tokens, mask, None)


def ours(model_dir: Path, fine_tune_type: str, **preference) -> TorchTrainable:
    config = TrainingConfig(
        model_name=str(model_dir),
        engine="torch",
        fine_tune_type=fine_tune_type,
        training_type="preference",
        lora_rank=4,
        lora_alpha=8.0,
        lora_target_modules=LORA_TARGETS,
        max_seq_length=16,
        seed=0,
        **preference,
    )
    trainable = TorchTrainable(config, describe(model_dir))
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference (LoRA starts B at zero)
        for name, p in trainable.model.named_parameters():
            if p.requires_grad and ("lora_B" in name or fine_tune_type == "full"):
                p.add_(torch.randn_like(p) * (0.05 if fine_tune_type == "full" else 0.5))
    return trainable


def twin(trainable: TorchTrainable, model_dir: Path):
    """TRL's side: an independent transformers (+ PEFT) model with the same weights as ours."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if trainable.is_peft:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    missing = model.load_state_dict(trainable.model.state_dict(), strict=False)
    assert not missing.unexpected_keys
    model.train()
    return model


def our_step(trainable: TorchTrainable, batch: PairBatch) -> tuple[float, dict[str, torch.Tensor]]:
    pairs = len(batch.tokens)
    sums = trainable.pair_backward(batch, 1.0 / pairs)
    return sums[0] / pairs, gradients(trainable.model)


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def assert_same_gradients(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert mine and set(mine) == set(theirs)
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], **TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


def concatenated(batch: PairBatch) -> dict[str, torch.Tensor]:
    """TRL's layout: all chosen rows, then all rejected rows."""
    tokens = torch.from_numpy(np.concatenate([batch.tokens[:, 0], batch.tokens[:, 1]]).astype(np.int64))
    mask = torch.from_numpy(np.concatenate([batch.mask[:, 0], batch.mask[:, 1]]).astype(np.int64))
    real = torch.ones_like(tokens)
    for row in range(len(tokens)):
        real[row, int(mask[row].nonzero().max()) + 1 :] = 0
    return {"input_ids": tokens, "attention_mask": real, "completion_mask": mask}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def dpo_trainer(
    mine: TorchTrainable,
    model_dir: Path,
    tokenizer,
    tmp_path: Path,
    *,
    beta: float,
    precompute: bool = False,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
):
    """A DPOTrainer on the base model, given a new adapter as TRL users do (``peft_config``: TRL then
    takes the reference with the adapter disabled), its weights then set to ours."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=beta,
        loss_type=[loss_type],
        label_smoothing=label_smoothing,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        per_device_train_batch_size=2,
        precompute_ref_log_probs=precompute,
    )
    data = Dataset.from_list([{"prompt": "Hi", "chosen": " a", "rejected": " b"}] * 2)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, task_type="CAUSAL_LM") if mine.is_peft else None
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    result = trainer.model.load_state_dict(mine.model.state_dict(), strict=False)
    assert not result.unexpected_keys
    trainer.model.train()
    return trainer


@pytest.mark.parametrize("fine_tune_type", ["lora", "full"])
def test_dpo_equals_trls_dpo_trainer(tiny_model_dir, tokenizer, tmp_path, fine_tune_type):
    batch = pair_batch(3)
    mine = ours(tiny_model_dir, fine_tune_type, beta=0.3)
    inputs = concatenated(batch)
    if fine_tune_type == "full":
        base = TorchTrainable(mine.config, describe(tiny_model_dir))  # the stored reference: the starting model
        n, length = batch.tokens.shape[0], batch.tokens.shape[2]
        reference = base.sequence_logps(batch.tokens.reshape(2 * n, length), batch.mask.reshape(2 * n, length))
        batch = batch._replace(reference=reference.reshape(n, 2))
        inputs.update(
            ref_chosen_logps=torch.from_numpy(batch.reference[:, 0]),
            ref_rejected_logps=torch.from_numpy(batch.reference[:, 1]),
        )
    trainer = dpo_trainer(mine, tiny_model_dir, tokenizer, tmp_path, beta=0.3, precompute=fine_tune_type == "full")
    theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    theirs.backward()
    loss, grads = our_step(mine, batch)
    assert abs(loss - 0.6931) > 0.01  # the policy is not the reference
    assert loss == pytest.approx(theirs.item(), abs=1e-4)
    assert_same_gradients(grads, gradients(trainer.model))


def test_dpo_label_smoothing_equals_trls_conservative_form(tiny_model_dir, tokenizer, tmp_path):
    batch = pair_batch(1, seed=3)
    mine = ours(tiny_model_dir, "lora", beta=0.5, dpo_label_smoothing=0.2)
    trainer = dpo_trainer(mine, tiny_model_dir, tokenizer, tmp_path, beta=0.5, loss_type="aot", label_smoothing=0.2)
    theirs = trainer._compute_loss(trainer.model, concatenated(batch), return_outputs=False)
    theirs.backward()
    loss, grads = our_step(mine, batch)
    assert loss == pytest.approx(theirs.item(), abs=1e-4)
    assert_same_gradients(grads, gradients(trainer.model))


def trl_logps(model, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(average log-probabilities of chosen rows, of rejected rows, the logits) by TRL's get_batch_logps."""
    from trl.experimental.orpo import ORPOTrainer

    inputs = concatenated(batch)
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    average = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    n = len(batch.tokens)
    return average[:n], average[n:], (logits, labels)


@pytest.mark.parametrize("fine_tune_type", ["lora", "full"])
def test_simpo_equals_trls_cpo_trainer_simpo_loss(tiny_model_dir, fine_tune_type):
    from trl.experimental.cpo import CPOTrainer

    batch = pair_batch(3, seed=1)
    mine = ours(tiny_model_dir, fine_tune_type, preference_loss="simpo", beta=2.0, simpo_gamma=0.7)
    model = twin(mine, tiny_model_dir)
    chosen, rejected, _ = trl_logps(model, batch)
    trainer = SimpleNamespace(
        alpha=0.0,
        beta=2.0,
        simpo_gamma=0.7,
        label_smoothing=0.0,
        loss_type="simpo",
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    losses, _, _ = CPOTrainer.cpo_loss(trainer, chosen, rejected)
    theirs = losses.mean()
    theirs.backward()
    loss, grads = our_step(mine, batch)
    assert loss == pytest.approx(theirs.item(), abs=1e-4)
    assert_same_gradients(grads, gradients(model))


@pytest.mark.parametrize("fine_tune_type", ["lora", "full"])
def test_orpo_equals_trls_odds_ratio_loss_and_nll(tiny_model_dir, fine_tune_type):
    from trl.experimental.orpo import ORPOTrainer

    batch = pair_batch(1, seed=2)
    mine = ours(tiny_model_dir, fine_tune_type, preference_loss="orpo", orpo_lambda=0.25)
    model = twin(mine, tiny_model_dir)
    chosen, rejected, (logits, labels) = trl_logps(model, batch)
    trainer = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device=torch.device("cpu")))
    odds, *_ = ORPOTrainer.odds_ratio_loss(trainer, chosen, rejected)
    nll = torch.nn.functional.cross_entropy(logits[:1, :-1].reshape(-1, logits.shape[-1]), labels[:1, 1:].reshape(-1))
    theirs = nll - odds.mean()  # ORPOTrainer.get_batch_loss_metrics: policy_nll_loss - losses.mean()
    theirs.backward()
    loss, grads = our_step(mine, batch)
    assert loss == pytest.approx(theirs.item(), abs=1e-4)
    assert_same_gradients(grads, gradients(model))


def test_orpo_odds_ratio_term_equals_trls_on_a_batch(tiny_model_dir):
    """Batch size > 1: the odds-ratio term (the part without the cross-entropy's weighting) alone."""
    from trl.experimental.orpo import ORPOTrainer

    from forgellm.training.preference import PreferenceSettings
    from forgellm.training.torch_preference import pair_losses

    rng = np.random.default_rng(4)
    counts = torch.from_numpy(rng.integers(1, 20, size=(6, 2)).astype(np.float32))
    logps = -torch.from_numpy(rng.uniform(0.01, 3.0, size=(6, 2)).astype(np.float32)) * counts
    settings = PreferenceSettings(loss="orpo", beta=0.0, label_smoothing=0.0, orpo_lambda=0.3, simpo_gamma=0.0)
    losses, metrics = pair_losses(settings, logps, counts, None)
    average = logps / counts
    odds, chosen_rewards, rejected_rewards, _, _ = ORPOTrainer.odds_ratio_loss(
        SimpleNamespace(beta=0.3, accelerator=SimpleNamespace(device=torch.device("cpu"))), average[:, 0], average[:, 1]
    )
    torch.testing.assert_close(losses, -average[:, 0] - odds, **TOLERANCE)
    torch.testing.assert_close(metrics[:, 0], chosen_rewards, **TOLERANCE)
    torch.testing.assert_close(metrics[:, 1], rejected_rewards, **TOLERANCE)


def test_reference_with_the_adapter_off_equals_the_base_model_alone(tiny_model_dir):
    batch = pair_batch(2, seed=5)
    mine = ours(tiny_model_dir, "lora", beta=0.1)
    n, length = batch.tokens.shape[0], batch.tokens.shape[2]
    tokens, mask = batch.tokens.reshape(2 * n, length), batch.mask.reshape(2 * n, length)
    with torch.no_grad(), mine.model.disable_adapter():
        adapter_off = mine._sequence_logps(tokens, mask)[0].numpy()
    adapter_on = mine.sequence_logps(tokens, mask)
    base_alone = TorchTrainable(
        mine.config.model_copy(update={"fine_tune_type": "full"}), describe(tiny_model_dir)
    ).sequence_logps(tokens, mask)
    np.testing.assert_allclose(adapter_off, base_alone, atol=1e-5)
    assert np.abs(adapter_on - base_alone).max() > 1e-2  # the adapter does change the model


def test_metrics_are_the_rewards_margin_accuracy_and_log_probabilities(tiny_model_dir):
    batch = pair_batch(4, seed=6)
    mine = ours(tiny_model_dir, "lora", beta=0.1)
    sums = mine.pair_eval(batch)
    loss, chosen, rejected, margin, accuracy, logp_chosen, logp_rejected = sums / 4
    assert margin == pytest.approx(chosen - rejected, abs=1e-6)
    assert 0.0 <= accuracy <= 1.0 and accuracy * 4 == round(accuracy * 4)
    assert logp_chosen < 0 and logp_rejected < 0 and loss > 0
