"""progress.py: reads a chunkgrpo Server-Sent Events stream on stdin and prints one line per
status change, iteration and held-out evaluation (make run's terminal view). Standard library only."""
import json
import sys
import time

TEMPLATES = ("plain", "sized", "positioned", "count", "pair", "relation")
t0, event = time.time(), None
for line in sys.stdin:
    line = line.rstrip("\n")
    if line.startswith("event: "):
        event = line[7:]
    if not line.startswith("data: "):
        continue
    d = json.loads(line[6:])
    stamp = f"{(time.time() - t0) / 60:5.1f} min  "
    if event == "status":
        error = f" ({d['error']})" if d.get("error") else ""
        print(f"{stamp}status {d['status']}{error}", flush=True)
    elif event == "metrics":
        v, it = d.get("values", {}), d.get("iteration")
        if "eval_align" in v:
            train = (f"  (training prompts {v['eval_train_align']:.3f})"
                     if "eval_train_align" in v else "")
            print(f"{stamp}iteration {it:4d}  held-out align {v['eval_align']:.3f}{train}",
                  flush=True)
            # the held-out means per caption template, in docs/prompts.md's order
            by_tpl = "  ".join(f"{t} {v['eval_template.' + t]:.3f}" for t in TEMPLATES
                               if "eval_template." + t in v)
            if by_tpl:
                print(f"{' ' * len(stamp)}by template: {by_tpl}", flush=True)
        if "reward_mean" in v:
            print(f"{stamp}iteration {it:4d}  reward {v['reward_mean']:.3f}  "
                  f"{v.get('images_per_sec', 0):.1f} images/s", flush=True)
        elif "loss" in v:
            print(f"{stamp}step {it:6d}  loss {v['loss']:.4f}", flush=True)
    elif event == "log" and d.get("level") == "error":
        print(f"{stamp}worker: {d['message']}", flush=True)
