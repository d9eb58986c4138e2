"""End to end on the embedded model: train briefly with ``forgellm train``, fuse the best
checkpoint, publish with ``--gguf``, then load the published folder everywhere a user would:
``forgellm cli generate`` (both engines), the model server, plain transformers, mlx-lm, and
the GGUF file with the ``gguf`` library."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from forgellm.analysis.analyze import analyze
from forgellm.analysis.runs import load_run
from forgellm.cli.main import root
from forgellm.runs.checkpoints import read_best
from tests.publish_helpers import PROMPT, torch_logits
from tests.training_helpers import prepared_data, write_config

pytestmark = pytest.mark.slow


def ok(*args: str) -> str:
    result = CliRunner().invoke(root, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout  # the summary line of `cli generate` goes to stderr


@pytest.mark.timeout(1800)  # minutes on an idle 2-core machine; far more when the machine is shared
def test_train_fuse_publish_and_load_the_embedded_model(workspace, embedded_model_dir):
    # Train on one token pattern, validate on another: validation loss turns up, so the best
    # checkpoint is an early one.
    prepared_data(workspace / "prepared", train=16, val=4)
    config = write_config(
        workspace / "c.yaml",
        model_name=str(embedded_model_dir),
        engine="torch",
        input_dir="prepared",
        run_name="smol",
        max_seq_length=32,
        batch_size=2,
        learning_rate=1e-2,
        warmup_steps=0,
        max_iterations=6,
        steps_per_eval=2,
        save_every=2,
        val_batches=1,
        lora_rank=4,
        lora_alpha=8.0,
        num_layers=4,
        seed=0,
        early_stopping_patience=0,
        max_checkpoints=5,
    )
    ok("train", "--config", str(config))
    run = workspace / "models/cpt/smol"
    analysis = analyze(load_run(run))
    steps = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert steps == ["step_000002", "step_000004", "step_000006"]
    best = read_best(run)["checkpoint"]  # the trainer's: what fuse and publish take by default
    assert best != steps[-1], [(c.name, c.val_loss, c.score) for c in analysis.checkpoints]

    # fuse: the chosen checkpoint, not the last
    output = ok("fuse", "cpt/smol")
    fused = run / f"fused-{best}"
    assert best in output
    expected = torch_logits(embedded_model_dir, run / "checkpoints" / best)
    np.testing.assert_allclose(torch_logits(fused), expected, atol=2e-3)
    assert not np.allclose(torch_logits(embedded_model_dir, run / "checkpoints" / steps[-1]), expected, atol=2e-3)

    # publish with a GGUF file
    output = ok("publish", "cpt/smol", "--name", "smol-pub", "--gguf")
    out = workspace / "models/published/smol-pub"
    assert best in output and json.loads((out / ".forgellm-model").read_text())["checkpoint"] == best
    card = (out / "README.md").read_text()
    assert f"base_model: {embedded_model_dir.name}" in card and f"`{best}`" in card
    np.testing.assert_allclose(torch_logits(out), expected, atol=2e-3)

    # forgellm cli generate, both engines: the same greedy text
    texts = {
        engine: ok(
            "cli",
            "generate",
            "--model",
            "published/smol-pub",
            "--engine",
            engine,
            "--prompt",
            PROMPT,
            "--format",
            "raw",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
        ).strip()
        for engine in ("torch", "mlx")
    }
    assert texts["torch"] and texts["torch"] == texts["mlx"]

    # the model server's loading code, through its HTTP API
    from forgellm.serving.app import create_app, registry_of

    app = create_app({"FORGELLM_ENGINE": "torch"})
    try:
        client = app.test_client()
        loaded = client.post("/api/model/load", json={"model": "published/smol-pub"})
        assert loaded.status_code == 200, loaded.get_json()
        answer = client.post(
            "/api/model/generate", json={"prompt": PROMPT, "format": "raw", "temperature": 0, "max_tokens": 8}
        )
        assert answer.status_code == 200 and answer.get_json()["text"].strip() == texts["torch"]
    finally:
        registry_of(app).close()

    # plain transformers and plain mlx-lm
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    hf_tokens = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :].tolist()

    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    mlx_model, mlx_tokenizer = load(str(out))
    mlx_tokens = [int(t) for t, _ in generate_step(mx.array(mlx_tokenizer.encode(PROMPT)), mlx_model, max_tokens=8)]
    end = next((i + 1 for i, t in enumerate(mlx_tokens) if t in mlx_tokenizer.eos_token_ids), len(mlx_tokens))
    assert hf_tokens == mlx_tokens[:end]  # transformers stops at the end-of-text token, generate_step does not

    # the GGUF file, read back with the gguf library
    import gguf
    from safetensors.numpy import load_file

    reader = gguf.GGUFReader(str(out / "smol-pub-f16.gguf"))
    arch = reader.get_field("general.architecture")
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    tensors = {t.name: t for t in reader.tensors}
    config = json.loads((out / "config.json").read_text())
    assert sum(n.startswith("blk.") and n.endswith("attn_q.weight") for n in tensors) == config["num_hidden_layers"]
    weights = {k: v for f in out.glob("*.safetensors") for k, v in load_file(f).items()}
    embed = weights["model.embed_tokens.weight"].astype(np.float32)
    from_gguf = np.asarray(tensors["token_embd.weight"].data, dtype=np.float32).reshape(embed.shape)
    np.testing.assert_allclose(from_gguf, embed, atol=1e-3)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    assert len(tokens.data) == config["vocab_size"]
