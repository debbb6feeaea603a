"""bench/: the quick run (tiny random Llama) writes every section, every figure is a positive measurement, and every
ratio / target in results.json is the ratio of the recorded values (benchmarks are not timed tests: no speed is
asserted here, only that the records are complete and consistent)."""

import json

import pytest
from devices import needs_cpu_fp8

from bench import run as bench_run
from bench.train_step import METHODS, RATIO_FIELDS, TARGETS


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    returned = bench_run.main(["--quick", "--out", str(out)])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(returned))
    on_disk["_markdown"] = (out / "results.md").read_text()
    return on_disk


def test_every_section_ran(results):
    for name in bench_run.SECTIONS:
        assert name in results, name
        assert "error" not in results[name], results[name].get("error")
    hw = results["meta"]["hardware"]
    assert hw["cpu"] and hw["cpu_cores"] >= 1 and hw["device"] == "cpu"


def test_train_step_figures_and_ratios_to_full(results):
    sec = results["train_step"]
    assert set(sec["methods"]) == set(METHODS)
    s = sec["setup"]
    assert s["batch_size"] > 0 and s["seq_len"] == s["speech_units"] + 2 + s["transcript_tokens"] and s["base_params"] > 0
    full = sec["methods"]["full"]
    for method, r in sec["methods"].items():
        for key in RATIO_FIELDS:
            assert r[key] > 0, (method, key, r[key])
            assert r["ratio_to_full"][key] == pytest.approx(r[key] / full[key], rel=1e-12), (method, key)
        assert len(r["step_times_s"]) == s["timed_steps"] and all(t > 0 for t in r["step_times_s"])
        # AdamW keeps exp_avg and exp_avg_sq (fp32) per trainable element, plus one scalar step per tensor
        assert 8 * r["trainable_params"] <= r["optimizer_state_bytes"] < 8 * r["trainable_params"] + 4 * 1000
    assert full["ratio_to_full"] == {k: 1.0 for k in RATIO_FIELDS}
    assert full["trainable_params"] == full["total_params"]
    mdu, lora = sec["methods"]["mdu_transformer"], sec["methods"]["lora"]
    assert mdu["trainable_params"] < full["trainable_params"]
    assert s["lora"]["lora_trainable"] == lora["trainable_params"] and s["lora"]["mdu_trainable"] == mdu["trainable_params"]
    assert abs(lora["trainable_params"] - mdu["trainable_params"]) <= 0.1 * mdu["trainable_params"]
    assert len(sec["targets"]) == 2 * len(TARGETS)
    for t in sec["targets"]:
        method = "mdu_e_branchformer" if "E-Branchformer" in t["name"] else "mdu_transformer"
        key = t["name"].split(": ")[1].split(" /")[0]
        assert t["value"] == sec["methods"][method]["ratio_to_full"][key]
        assert t["pass"] == (t["value"] <= TARGETS[key])


def test_logits_at_labels_speedup_is_ratio(results):
    sec = results["logits_at_labels"]
    full, only = sec["full_logits"]["step_time_s"], sec["labels_only"]["step_time_s"]
    assert full > 0 and only > 0
    assert sec["speedup"] == pytest.approx(full / only, rel=1e-12)
    # same batch, same model: the loss does not depend on where the logits were computed
    assert sec["labels_only"]["initial_loss"] == pytest.approx(sec["full_logits"]["initial_loss"], rel=1e-5)
    assert sec["setup"]["seq_len"] > 10 * sec["setup"]["labelled_tokens_per_example"]  # prompt >> transcript
    assert sec["targets"][0]["pass"] == (sec["speedup"] >= 1.3)


def test_generation_tokens_per_s_and_ratios(results):
    sec = results["generation"]
    models = sec["models"]
    assert set(models) == {"base", "mdu_transformer", "mdu_e_branchformer"}
    ref = models["base"]["cached"]["tokens_per_s"]
    s = sec["setup"]
    for name, r in models.items():
        for key in ("cached", "uncached"):
            g = r[key]
            assert g["tokens_per_s"] > 0 and g["generate_time_s"] > 0
            assert g["tokens_per_s"] == pytest.approx(s["batch_size"] * s["new_tokens"] / g["generate_time_s"], rel=1e-12)
            assert r["ratio_to_base_cached"][key] == pytest.approx(g["tokens_per_s"] / ref, rel=1e-12)
    assert models["mdu_e_branchformer"]["layers"] > models["base"]["layers"]
    t = sec["targets"][0]
    assert t["value"] == models["mdu_e_branchformer"]["ratio_to_base_cached"]["cached"] and t["pass"] == (t["value"] >= 0.75)


def test_text_bypass_ratios(results):
    models = results["text_bypass"]["models"]
    assert set(models) == {"base"} | {f"mdu_{lt}_bypass_{b}" for lt in ("transformer", "e_branchformer") for b in ("on", "off")}
    ref = models["base"]["forward_time_s"]
    for name, r in models.items():
        assert r["forward_time_s"] > 0
        assert r["ratio_to_base"] == pytest.approx(r["forward_time_s"] / ref, rel=1e-12), name
    for t in results["text_bypass"]["targets"]:
        assert t["pass"] == (t["value"] <= 1.05)


def test_tokenizer_rtf_positive(results):
    sec = results["tokenizer"]
    if "skipped" in sec:
        pytest.skip(sec["skipped"])
    rtfs = {k: v for k, v in sec["results"].items() if "rtf" in k}
    assert rtfs and all(v > 0 for v in rtfs.values()), rtfs


def test_markdown_has_every_section_with_sizes(results):
    md = results["_markdown"]
    for heading in ("## Training step", "## Loss from logits", "## Generation", "## Text-only forward", "## Speech tokenizer"):
        assert heading in md, heading
    before_levers = md.split("## Lever")[0]  # issue 20's sections follow, with their own captions (test_lever_*)
    captions = [line for line in before_levers.splitlines() if line.startswith("_hardware:") and "model:" in line]
    assert len(captions) == 4
    for line in captions:  # every figure with its hardware, model size, sequence length and batch size
        assert results["meta"]["hardware"]["cpu"] in line and "params" in line, line
        assert "seq len " in line and "batch " in line, line
    assert before_levers.count("| full fine-tuning |") == 1 and "| MDU E-Branchformer |" in md


def test_front_end_leave_one_synthesizer_out_records(results):
    """bench/front_end.py (issue 17): the quick fold holds flite out, measures the held-out family next to held-out
    voices of the training families, the previous recipe too, and its target is the recorded PER against 0.25."""
    sec = results["front_end"]
    if "skipped" in sec:
        pytest.skip(sec["skipped"])
    fold = sec["folds"]["flite"]
    roles = {row["split"]: row["role"] for row in fold["rows"]}
    assert roles == {"test": "held-out voices of a training family", "test_mbrola": "held-out voices of a training family",
                     "test_flite": "held-out family"}
    assert all(0 <= row["per"] for row in fold["rows"]) and fold["fit"]["fit_s"] > 0
    held = next(row["per"] for row in fold["rows"] if row["role"] == "held-out family")
    assert fold["target"] == {"name": "PER on the held-out family", "value": held, "target": "<= 0.25", "pass": held <= 0.25}
    old = sec["previous_recipe"]
    assert old["fit"]["recipe"]["spec_augment"] is False and fold["fit"]["recipe"]["spec_augment"] is True
    assert {row["split"] for row in old["rows"]} == set(roles)
    assert "## Front end: phoneme error rate" in results["_markdown"]


# ------------------------------------------------------------------ issue 20: the performance levers
def _lever_captions(results, heading):
    section = results["_markdown"].split(heading)[1].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("_hardware:")]


def test_lever_recompute_records_and_ratios(results):
    from bench.recompute import FIELDS, METHODS

    sec = results["recompute"]
    assert set(sec["methods"]) == set(METHODS)
    full = sec["methods"]["full"]
    for name, r in sec["methods"].items():
        for key in FIELDS:
            assert r[key] > 0 and r["ratio_to_full"][key] == pytest.approx(r[key] / full[key], rel=1e-12), (name, key)
    for lt in ("mdu_transformer", "mdu_e_branchformer"):
        on, off = sec["methods"][f"{lt}_recompute"], sec["methods"][lt]
        assert on["trainable_params"] == off["trainable_params"]
        assert on["saved_activation_bytes"] < off["saved_activation_bytes"]  # bytes, not time: deterministic
        assert on["first_loss"] == pytest.approx(off["first_loss"], rel=1e-6)
    t = sec["targets"][0]
    assert t["value"] == sec["methods"]["mdu_transformer_recompute"]["ratio_to_full"]["peak_memory_bytes"]
    assert t["pass"] == (t["value"] <= 0.5) and len(_lever_captions(results, "## Lever: recomputation")) == 1


def test_lever_packing_records_and_ratios(results):
    sec = results["packing"]
    s = sec["setup"]
    assert s["padded_shape"][0] == s["examples"] and s["padded_shape"][0] * s["padded_shape"][1] > s["real_tokens"]
    for lt, row in sec["models"].items():
        for layout in ("padded", "packed", "packed rows"):
            r = row[layout]
            assert r["tokens_per_s"] == pytest.approx(s["real_tokens"] / r["step_time_s"], rel=1e-12)
        assert row["packed"]["computed_tokens"] == s["real_tokens"] <= row["packed rows"]["computed_tokens"]
        for layout in ("packed", "packed rows"):
            speedup = row[layout]["tokens_per_s"] / row["padded"]["tokens_per_s"]
            assert row["speedup"][layout] == pytest.approx(speedup, rel=1e-12)
    assert [t["value"] for t in sec["targets"]] == [v for row in sec["models"].values() for v in row["speedup"].values()]


def test_lever_decode_records_and_ratios(results):
    sec = results["decode"]
    s = sec["setup"]
    models = sec["models"]
    for row in models.values():
        for kind in s["cache_kinds"]:
            r = row[kind]
            expected = s["batch_size"] * (s["new_tokens"] - 1) / r["decode_time_s"]
            assert r["decode_tokens_per_s"] == pytest.approx(expected, rel=1e-12)
            ref = models["base"][kind]["decode_tokens_per_s"]
            assert row["ratio_to_base"][kind] == pytest.approx(r["decode_tokens_per_s"] / ref, rel=1e-12)
    # the lever itself, counted: no reads per decoding step by default, one per step (E-Branchformer) with speech
    for name in ("mdu_transformer", "mdu_e_branchformer"):
        assert models[name]["host_reads_per_step"]["text steps (generate's default)"] == 0
    assert models["mdu_e_branchformer"]["host_reads_per_step"]["speech ids allowed"] == 1


def test_lever_ebf_cost_records_and_ratios(results):
    sec = results["ebf_cost"]
    p = sec["profile_mdu_e_branchformer_step"]
    assert p["groups_s"]["depthwise conv"] > 0 and p["groups_s"]["matmul"] > 0
    assert sum(p["groups_s"].values()) == pytest.approx(p["total_s"], rel=1e-9)
    full = sec["models"]["full"]["step_time_s"]
    for r in sec["models"].values():
        assert r["ratio_to_full"] == pytest.approx(r["step_time_s"] / full, rel=1e-12)
    models = sec["models"]
    assert models["mdu_e_branchformer_cgmlp_3d"]["cgmlp_units"] * 2 == models["mdu_e_branchformer"]["cgmlp_units"]
    assert models["mdu_e_branchformer_cgmlp_3d"]["trainable_params"] < models["mdu_e_branchformer"]["trainable_params"]


def test_lever_fp8_records_and_ratios(results):
    from modeling_mdu.modeling_mdu import cpu_has_rowwise_fp8_matmul

    sec = results["fp8"]
    if not cpu_has_rowwise_fp8_matmul():  # torch 2.11's CPU: the section says why it did not run
        assert "row-wise scaled FP8" in sec["skipped"] and "Lever fp8: skipped" in bench_run.to_markdown(results)
    needs_cpu_fp8()
    assert "skipped" not in sec
    models = sec["models"]
    full = models["full"]["step_time_s"]
    for r in models.values():
        assert r["ratio_to_full"] == pytest.approx(r["step_time_s"] / full, rel=1e-12)
        assert len(r["losses"]) == sec["setup"]["steps"] == len(r["step_times_s"])
    ref, fp8 = models["mdu_transformer"]["losses"], models["mdu_transformer_fp8"]["losses"]
    assert sec["max_relative_loss_gap_fp8_vs_reference"] == max(abs(a - b) / abs(a) for a, b in zip(ref, fp8))
    assert 0 < sec["max_relative_loss_gap_fp8_vs_reference"] < 0.05  # FP8 changes the numbers, a little
