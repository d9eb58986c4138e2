"""The peak, training and generation benchmarks: their arithmetic, and their output in quick mode
(through `forgellm bench`, as `make test` runs it). The timings themselves are not checked here."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from forgellm.bench import generation, training
from forgellm.cli.main import root

SMOL = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
}


def _bench(name: str) -> list[dict]:
    result = CliRunner().invoke(root, ["bench", "--quick", "--json", "--only", name])
    assert result.exit_code == 0, result.output
    suites = json.loads(result.output[result.output.index("{") :])["suites"]
    assert [s["module"] for s in suites] == [name] and suites[0]["error"] is None, suites
    return suites[0]["results"]


def _rows_by_name(results: list[dict]) -> dict[str, dict]:
    rows = {r["name"]: r for r in results}
    for name, row in rows.items():
        assert row["value"] > 0
        if name.endswith(("_products_ceiling", "_products_in_step")):  # no contender: the step's MFU over it
            assert row["baseline"] is None and row["ratio"] > 0
            continue
        assert row["baseline"] > 0
        assert row["ratio"] == pytest.approx(row["value"] / row["baseline"], rel=0.01)
    return rows


def test_training_flops_count_weight_gradients_only_for_trained_weights() -> None:
    setting = training.Setting(seq_length=257, batch_size=4, rounds=1, steps=1)
    params = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) + 49152 * 576

    def flops(fine_tune_type: str, trains_head: bool) -> float:
        return training.flops_per_token(
            SMOL, setting, training.step_products(SMOL, setting, fine_tune_type, trains_head)
        )

    full, lora = flops("full", True), flops("lora", False)
    # Full: 6 FLOPs per weight (forward, activation and weight gradients) plus causal attention.
    attention = 30 * 4 * 576 * 128.5
    assert full == pytest.approx(6 * params + 3 * attention)
    # LoRA: no weight gradients for the frozen weights (4N); the rank-16 adapters cost 6 per weight.
    adapters = 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert lora == pytest.approx(4 * params + 3 * attention + 6 * adapters)
    # Blocks only (mlx_lm.lora's full fine-tune): the tied output layer needs no weight gradient.
    head = 49152 * 576
    assert flops("full", False) == pytest.approx(6 * params - 2 * head + 3 * attention)


def test_training_ratio_is_the_median_of_the_rounds_paired_ratios() -> None:
    ours, theirs = training.Tally(), training.Tally()
    # round 2 is slow for ours only while the host is busy; round 3 slow for both
    for ours_s, theirs_s in ((1.0, 1.2), (3.0, 1.1), (2.4, 3.0)):
        ours.add({"seconds": ours_s, "tokens": 120, "loss": 1.0})
        theirs.add({"seconds": theirs_s, "tokens": 120, "loss": 1.0})
    assert ours.tokens_per_second == pytest.approx(120 / 2.4)  # medians of each round's tokens/s
    assert theirs.tokens_per_second == pytest.approx(120 / 1.2)
    assert training.paired_ratio(ours, theirs) == pytest.approx(1.2 / 1.0)  # ratios 1.2, 0.367, 1.25
    row = training._rows("lora_torch", ours, theirs, "peer", 1e9, 100.0, training.FULL)[0]
    assert row["ratio"] == pytest.approx(1.2) and row["value"] == pytest.approx(50.0)


def test_mlx_lm_step_reports_are_parsed_without_colour_codes() -> None:
    line = "     3    \x1b[1m10.797 ▼\x1b[0m    \x1b[1m 1,096\x1b[0m      0.2k"
    match = training.MlxLoraCommand.REPORT.match(training.ANSI.sub("", line))
    assert match and match.group(1) == "3" and match.group(2) == "10.797" and match.group(3) == "1,096"


def test_generation_decode_speed_counts_only_tokens_after_the_first() -> None:
    answer = {"started": 10.0, "seen": [(10.5, 1), (11.0, 3), (11.5, 5)]}
    assert generation._decode_speed(answer, count=5) == pytest.approx(4 / 1.0)


def test_generation_ttft_added_is_the_median_of_paired_differences() -> None:
    decode = {"raw": [10.0, 10.0, 10.0], "forgellm": [9.0, 9.5, 9.7]}
    # round 2 is slow for both: pairing cancels it, where the difference of medians would not
    ttft = {"raw": [0.200, 0.400, 0.210], "forgellm": [0.230, 0.440, 0.260]}
    rows = {r["name"]: r for r in generation._rows("torch", decode, ttft, 8, generation.FULL)}
    row = rows["gen_torch_cli_ttft_ms"]
    assert row["value"] == 260.0 and row["baseline"] == 210.0
    assert "adds +40.0 ms" in row["notes"]
    assert rows["gen_torch_cli_tokens_per_s"]["ratio"] == pytest.approx(0.95)


def test_peak_quick_reports_torch_and_mlx_against_the_machine_peak() -> None:
    rows = _rows_by_name(_bench("peak"))
    assert set(rows) == {"matmul_peak_torch", "matmul_peak_mlx"}
    assert max(r["ratio"] for r in rows.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_training_quick_compares_both_engines_with_their_peers() -> None:
    rows = _rows_by_name(_bench("training"))
    for engine in ("torch", "mlx"):
        for measure in ("tokens_per_s", "mfu", "products_ceiling", "peak_memory"):
            assert f"train_lora_{engine}_{measure}" in rows
        ceilings = [rows[f"train_lora_{engine}_products_ceiling"]]
        if engine == "torch":  # products inside the step: torch.profiler
            ceilings.append(rows["train_lora_torch_products_in_step"])
        for ceiling in ceilings:
            assert 0 < ceiling["value"] < 2
            assert ceiling["ratio"] == pytest.approx(
                rows[f"train_lora_{engine}_mfu"]["value"] / ceiling["value"], rel=0.01
            )
    assert "train_lora_mlx_products_in_step" not in rows
    assert 0 < rows["train_lora_torch_mfu"]["value"] < 1.5


@pytest.mark.slow
def test_generation_quick_compares_cli_and_server_with_raw_engines() -> None:
    rows = _rows_by_name(_bench("generation"))
    for name in (
        "gen_torch_cli_tokens_per_s",
        "gen_torch_cli_ttft_ms",
        "gen_torch_server_tokens_per_s",
        "gen_torch_server_ttft_ms",
        "gen_mlx_cli_tokens_per_s",
        "gen_mlx_cli_ttft_ms",
    ):
        assert name in rows


def test_markdown_table_has_one_row_per_result_and_names_failures() -> None:
    from forgellm.cli.bench_cmd import markdown_table

    suites = [
        {
            "module": "peak",
            "error": None,
            "results": [
                {
                    "name": "matmul_peak_torch",
                    "value": 50.0,
                    "unit": "GFLOP/s",
                    "baseline": 60.0,
                    "ratio": 0.833,
                    "notes": "a | b",
                }
            ],
        },
        {"module": "training", "error": "RuntimeError('x')\ntraceback", "results": []},
    ]
    lines = markdown_table(suites).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| peak | matmul_peak_torch | 50 GFLOP/s | 60 GFLOP/s | **0.833** | a / b |"
    assert lines[3].startswith("| training | failed |") and "RuntimeError('x')" in lines[3]


def test_cpu_env_defaults_keep_the_users_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from forgellm import cpu_env
    from forgellm.bench.training import _plain_env

    monkeypatch.setattr(cpu_env, "APPLIED_ENV", set())
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cpu_env.apply_cpu_env_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in os.environ  # the user's choice
    assert _plain_env()["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    cpu_env.apply_cpu_env_defaults()
    # ForgeLLM bounds the idle spin of OpenMP threads; a baseline (a user's own script) runs without that default.
    assert os.environ["GOMP_SPINCOUNT"] == "20000" and "GOMP_SPINCOUNT" not in _plain_env()
    monkeypatch.delenv("GOMP_SPINCOUNT")


@pytest.mark.slow
def test_qa_batched_quick_answers_as_one_at_a_time() -> None:
    rows = _rows_by_name(_bench("qa_batched"))
    assert set(rows) == {"qa_batched_torch", "qa_batched_mlx"}
    assert all("8/8 answers identical" in row["notes"] for row in rows.values())


@pytest.mark.slow
def test_preference_quick_compares_a_dpo_step_with_trls_dpo_trainer() -> None:
    (row,) = _bench("preference")
    assert row["name"] == "train_dpo_lora_torch_tokens_per_s" and row["unit"] == "tokens/s"
    assert row["value"] > 0 and row["baseline"] > 0 and row["ratio"] > 0
    assert "TRL 1.16.0 DPOTrainer" in row["notes"]


def _report(
    chat: tuple[int, int],
    document: tuple[int, int],
    domain: float,
    general: float,
    preference: tuple[int, int] = (6, 12),
    margin: float = -0.05,
):
    from forgellm.training.evaluate import EvalReport

    files = {
        name: {"correct": c, "total": t, "accuracy": c / t}
        for name, (c, t) in (("chat-facts", chat), ("document-facts", document))
    }
    return EvalReport(
        model="m",
        path="p",
        engine="torch",
        qa_files=files,
        domain_ppl=domain,
        general_ppl=general,
        preference_correct=preference[0],
        preference_total=preference[1],
        preference_accuracy=preference[0] / preference[1],
        preference_margin=margin,
    )


def test_learning_rows_and_readme_table_compare_each_stage_with_the_base_model() -> None:
    from forgellm.bench.learning import readme_table, reward_rows, stage_rows

    base = _report((0, 42), (1, 21), 20.0, 12.33)
    rows = stage_rows("base", base, base, None, "m")
    rows += stage_rows("cpt", _report((3, 42), (7, 21), 8.0, 12.70), base, 300.0, "m")
    rows += stage_rows("ift", _report((31, 42), (6, 21), 9.5, 13.0, (7, 12)), base, 45.0, "m")
    assert reward_rows("ift", [{"step": 0, "val_loss": 2.0}]) == []  # a cpt/ift run has no rewards
    rows += stage_rows("preference", _report((32, 42), (6, 21), 9.6, 13.1, (11, 12), 0.31), base, 90.0, "m")
    evals = [
        {"step": 0, "val_accuracy": 0.0, "val_margin": 0.0},
        {"step": 20, "val_accuracy": 0.5, "val_margin": 0.1},
        {"step": 40, "val_accuracy": 11 / 12, "val_margin": 0.8123},
    ]
    rows += reward_rows("preference", evals)
    by_name = {r["name"]: r for r in rows}
    assert "learning_base_train_wall_s" not in by_name and by_name["learning_cpt_train_wall_s"]["value"] == 300.0
    assert by_name["learning_ift_chat_facts_qa"]["value"] == pytest.approx(73.8)
    general = by_name["learning_cpt_general_ppl"]
    assert general["baseline"] == 12.33 and general["ratio"] == pytest.approx(12.70 / 12.33, abs=1e-4)
    assert "+3.0% vs the base model" in general["notes"]
    assert by_name["learning_preference_preference_accuracy"]["value"] == pytest.approx(91.7)
    assert by_name["learning_preference_preference_margin"]["value"] == 0.31
    reward = by_name["learning_preference_reward_accuracy"]
    assert (reward["value"], reward["baseline"]) == (91.7, 0.0) and "step 40, baseline step 0" in reward["notes"]
    assert "configs/preference-sample.yaml" in by_name["learning_preference_train_wall_s"]["notes"]
    assert readme_table(rows).splitlines() == [
        "| model | chat-facts QA | document-facts QA | preference accuracy | domain ppl | general ppl (rise) "
        "| training time |",
        "|---|---|---|---|---|---|---|",
        "| base model | 0.0% (0/42) | 4.8% (1/21) | 50.0% (6/12) | 20.00 | 12.33 | - |",
        "| after CPT | 7.1% (3/42) | 33.3% (7/21) | 50.0% (6/12) | 8.00 | 12.70 (+3.0%) | 5.0 min |",
        "| after IFT (on the CPT adapter) | 73.8% (31/42) | 28.6% (6/21) | 58.3% (7/12) | 9.50 | 13.00 (+5.4%) | 45 s |",
        "| after DPO (on the IFT adapter) | 76.2% (32/42) | 28.6% (6/21) | 91.7% (11/12) | 9.60 | 13.10 (+6.2%) "
        "| 1.5 min |",
        "",
        "After DPO (on the IFT adapter), the run's own reward accuracy on the held-out pairs: 0.0% at step 0, "
        "91.7% at the end; reward margin 0.000 -> 0.812.",
    ]


@pytest.mark.slow
def test_learning_quick_trains_the_shipped_recipes_and_evaluates_every_stage() -> None:
    from forgellm.bench.learning import readme_table

    results = _bench("learning")
    rows = {r["name"]: r for r in results}
    stages = ("base", "cpt", "ift", "preference")
    measures = (
        "chat_facts_qa",
        "document_facts_qa",
        "domain_ppl",
        "general_ppl",
        "preference_accuracy",
        "preference_margin",
    )
    assert set(rows) == {f"learning_{s}_{m}" for s in stages for m in measures} | {
        f"learning_{s}_train_wall_s" for s in stages[1:]
    } | {"learning_preference_reward_accuracy", "learning_preference_reward_margin"}
    for stage in stages:
        for qa in ("chat_facts_qa", "document_facts_qa"):
            row = rows[f"learning_{stage}_{qa}"]
            assert row["total"] == 3 and row["value"] == pytest.approx(100 * row["correct"] / 3, abs=0.1)
        assert rows[f"learning_{stage}_domain_ppl"]["value"] > 1
    # every stage is scored on the same held-out pairs: the preference run's validation split
    assert len({rows[f"learning_{stage}_preference_accuracy"]["total"] for stage in stages} - {0}) == 1
    base = rows["learning_base_general_ppl"]["value"]
    for stage in stages[1:]:
        general = rows[f"learning_{stage}_general_ppl"]
        assert general["baseline"] == base and general["ratio"] == pytest.approx(general["value"] / base, rel=1e-3)
        assert rows[f"learning_{stage}_train_wall_s"]["value"] > 0
        # Two steps of a tiny random model: the adapter moved the weights, a little.
        assert general["value"] != base and 0.5 < general["ratio"] < 2
    # DPO at step 0: the run's model is its reference, no pair's chosen reward is above the rejected one's
    reward = rows["learning_preference_reward_accuracy"]
    assert reward["baseline"] == 0.0 and rows["learning_preference_reward_margin"]["baseline"] == 0.0
    assert rows["learning_preference_preference_margin"]["value"] != rows["learning_ift_preference_margin"]["value"]
    assert len(readme_table(results).splitlines()) == 6 + 2


def _measured(rates: list[float], first: float, last: float, mlx_gb: float, rss_gb: float):
    from forgellm.bench.qlora import Measured

    measured = Measured(first_loss=first, mlx_peak_bytes=int(mlx_gb * 1e9))
    for rate in rates:
        measured.tally.add({"tokens": rate, "seconds": 1.0, "loss": last})
    measured.tally.peak_rss_bytes = int(rss_gb * 1e9)
    return measured


def test_qlora_rows_compare_each_quantized_base_with_float32(tmp_path) -> None:
    from forgellm.bench._common import suite_results
    from forgellm.bench.qlora import QUICK, base_table, rows

    measured = {
        "float32": _measured([100.0, 50.0, 100.0], 2.0, 1.5, 1.0, 2.0),
        # round 2 was slow for float32 alone: the paired ratios are 0.5, 1.0, 0.5
        "8bit": _measured([50.0, 50.0, 50.0], 2.01, 1.52, 0.8, 2.1),
        "4bit": _measured([40.0, 40.0, 40.0], 4.0, 3.0, 0.7, 2.1),
    }
    results = rows(measured, QUICK, "smol")
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {
        f"qlora_{b}_{m}"
        for b in ("8bit", "4bit")
        for m in ("tokens_per_s", "mlx_peak_memory", "peak_rss", "first_loss", "last_loss")
    }
    speed = by_name["qlora_8bit_tokens_per_s"]
    assert (speed["value"], speed["baseline"], speed["ratio"]) == (50.0, 100.0, 0.5)
    assert by_name["qlora_4bit_tokens_per_s"]["ratio"] == 0.4
    assert "batch 2 x 32 tokens" in speed["notes"] and "smol" in speed["notes"]
    memory = by_name["qlora_4bit_mlx_peak_memory"]
    assert (memory["value"], memory["baseline"], memory["ratio"]) == (0.7, 1.0, 0.7)
    assert by_name["qlora_4bit_first_loss"]["ratio"] == 2.0 and by_name["qlora_8bit_last_loss"]["value"] == 1.52

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"suites": [{"module": "qlora", "error": None, "results": results}]}))
    assert base_table(suite_results(path, "qlora")).splitlines()[2:] == [
        "| float32 | 100.0 | 1.00 GB | 2.00 GB | 2.000 | 1.500 |",
        "| `quantization: 8bit` | 50.0 (x0.50) | 0.80 GB (x0.80) | 2.10 GB (x1.05) | 2.010 (x1.00) | 1.520 (x1.01) |",
        "| `quantization: 4bit` | 40.0 (x0.40) | 0.70 GB (x0.70) | 2.10 GB (x1.05) | 4.000 (x2.00) | 3.000 (x2.00) |",
    ]


@pytest.mark.slow
def test_qlora_quick_trains_float32_8bit_and_4bit_side_by_side() -> None:
    rows = _rows_by_name(_bench("qlora"))
    assert len(rows) == 10
    # the same batches from the same seed: the quantized bases start near float32's loss
    assert rows["qlora_8bit_first_loss"]["ratio"] == pytest.approx(1.0, abs=0.05)
    # fewer bits, less memory for the weights (the tiny llama's projections and embedding quantize)
    assert (
        rows["qlora_4bit_mlx_peak_memory"]["value"]
        < rows["qlora_8bit_mlx_peak_memory"]["value"]
        < rows["qlora_8bit_mlx_peak_memory"]["baseline"]
    )
