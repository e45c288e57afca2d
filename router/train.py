"""``python -m router.train``: the difficulty classifier's training script (router/difficulty/train.py)."""
from router.difficulty.train import main

if __name__ == "__main__":
    raise SystemExit(main())
