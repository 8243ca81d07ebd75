"""Stage 4 of bench/cuda_check.sh: transformers' Mistral4ForCausalLM against the cuda backend on one checkpoint.

    python3 bench/cuda_check_hf.py CHECKPOINT_DIR OURS_PREFIX

Loads CHECKPOINT_DIR (a `make-checkpoint` directory, HF layout) with transformers in float32 on the GPU, runs the
prompt of bench/cuda_check.ts, and compares its logits with ours (OURS_PREFIX.plain.bin and
OURS_PREFIX.deepseek_yarn.bin, raw f32 [tokens, vocab] written by `cuda_check.ts hf-logits`) by normalised error
(max |a - e| / max |e|). Prints a markdown table naming the softmax scale this transformers version matches.
"""
import sys

import numpy as np
import torch
import transformers

PROMPT = [1, 3, 1500, 2201, 77_000, 4, 1100, 1200, 9000, 1042, 1043]


def load(directory):
    errors = []
    names = ["Mistral4ForCausalLM", "AutoModelForCausalLM", "AutoModelForImageTextToText"]
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is None:
            errors.append(f"{name}: not in transformers {transformers.__version__}")
            continue
        try:
            return name, cls.from_pretrained(directory, torch_dtype=torch.float32).to("cuda").eval()
        except Exception as e:  # noqa: BLE001 - report every attempt
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    raise RuntimeError("; ".join(errors))


def main():
    directory, ours = sys.argv[1], sys.argv[2]
    print(f"| softmax scale (ours) | normalised error vs transformers {transformers.__version__} | matches |")
    print("|---|---|---|")
    try:
        name, model = load(directory)
        with torch.no_grad():
            out = model(torch.tensor([PROMPT], device="cuda"))
        want = out.logits[0].float().cpu().numpy()
    except Exception as e:  # noqa: BLE001 - the table says what failed
        print(f"| (transformers) | could not run: {e} | FAIL |")
        return 1
    errors = {}
    for scale in ["plain", "deepseek_yarn"]:
        got = np.fromfile(f"{ours}.{scale}.bin", dtype=np.float32).reshape(want.shape)
        errors[scale] = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    best = min(errors, key=errors.get)
    for scale, err in errors.items():
        match = "yes" if scale == best and err <= 1e-3 else "no"
        print(f"| {scale} | {err:.2e} | {match} |")
    print(f"\ntransformers {transformers.__version__} ({name}) matches `{best}` (error {errors[best]:.2e}, bound 1e-3)")
    return 0 if errors[best] <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
