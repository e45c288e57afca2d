"""PII recall on sentence templates held out from the detectors' tuning:
``python -m bench.moderation.pii_heldout [--per-type N] [--baseline REV]``.

The templates below were written for this measure after the detectors were tuned and were
never used to tune them. Values are generated: phone numbers are libphonenumber's example
numbers of 30 countries in its international, national and E.164 formats, with the digits after
the area code shuffled so they are not the examples themselves; IBANs of 12 countries with valid
check digits; Luhn-valid card numbers; SSNs with valid parts. Negatives (dates, order numbers,
prices, versions, times) count detections where there is no PII.

The detectors of this tree are compared with those of ``--baseline`` (a git revision; default
the commit before ``phonenumbers`` and ``python-stdnum`` came in), loaded from ``git show``.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban as iban_check
from stdnum import luhn

from policies.moderation import pii

REPO = Path(__file__).resolve().parents[2]
BASELINE = "e85cb64"
"""The last commit whose detectors had no phonenumbers / python-stdnum."""

TEMPLATES = [
    "Reach our coordinator on {v} before Thursday.",
    "My details: {v}. Please keep them private.",
    "If the delivery fails, the driver will try {v} instead.",
    "{v} is the number she left with reception yesterday.",
    "Transfer the deposit using {v} and send the receipt.",
    "He wrote {v} on the back of the form, then crossed it out.",
    "For urgent matters use {v}; otherwise email is fine.",
    "The file lists {v} under emergency contact.",
    "Could you confirm whether {v} is still correct?",
    "Payment reference: {v} (added by the agent).",
]
NEGATIVES = [
    "The meeting moved to 2025-03-14 at 10:30, room 4.12.",
    "Order 48213977 shipped on 12/05/2024 and cost 1,249.99 EUR.",
    "Upgrade from version 3.11.4 to 3.12.1 before 31.12.2025.",
    "Population grew from 8 336 817 to 8 804 190 in ten years.",
    "Use seed 20240611 and batch 128 for run 7731-A.",
    "Flight LH 1234 departs at 07:45 from gate B 22.",
]
COUNTRIES = ["US", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI", "PL", "PT", "IE",
             "CA", "AU", "NZ", "IN", "JP", "KR", "BR", "MX", "ZA", "SG", "HK", "IL", "AE"]
IBAN_SAMPLES = ["DE89370400440532013000", "GB29NWBK60161331926819", "FR1420041010050500013M02606",
                "ES9121000418450200051332", "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957",
                "AT611904300234573201", "IT60X0542811101000000123456", "PL61109010140000071219812874",
                "SE4550000000058398257466", "DK5000400440116243"]


def _phone(rng: random.Random) -> str:
    region = rng.choice(COUNTRIES)
    example = phonenumbers.example_number(region)
    assert example is not None
    national = str(example.national_number)
    keep = min(3, len(national) - 4)
    for _ in range(20):  # shuffle the subscriber digits until libphonenumber still calls it valid
        tail = list(national[keep:])
        rng.shuffle(tail)
        candidate = phonenumbers.PhoneNumber(country_code=example.country_code,
                                             national_number=int(national[:keep] + "".join(tail)))
        if phonenumbers.is_valid_number(candidate):
            example = candidate
            break
    fmt = rng.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL,
                      phonenumbers.PhoneNumberFormat.E164])
    if region != "US" and fmt == phonenumbers.PhoneNumberFormat.NATIONAL:
        fmt = phonenumbers.PhoneNumberFormat.INTERNATIONAL  # a national number of elsewhere names no country
    return str(phonenumbers.format_number(example, fmt))


def _iban(rng: random.Random) -> str:
    base = rng.choice(IBAN_SAMPLES)
    body = list(base[4:])
    digits = [i for i, c in enumerate(body) if c.isdigit()]
    for i in rng.sample(digits, min(4, len(digits))):
        body[i] = str(rng.randrange(10))
    number = base[:2] + "00" + "".join(body)
    number = number[:2] + iban_check.calc_check_digits(number) + number[4:]
    return " ".join(number[i:i + 4] for i in range(0, len(number), 4)) if rng.random() < 0.7 else number


def _card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "55", "37", "6011"])
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    number = body + luhn.calc_check_digit(body)
    sep = rng.choice([" ", "-", ""])
    groups = [number[i:i + 4] for i in range(0, len(number), 4)]
    return sep.join(groups)


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "phone": _phone, "iban": _iban, "credit_card": _card, "us_ssn": _ssn}


def _baseline(rev: str) -> Any:
    source = subprocess.run(["git", "show", f"{rev}:policies/moderation/pii.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "pii_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pii_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_baseline"] = module
    spec.loader.exec_module(module)
    return module


def measure(find: Callable[[str], list[Any]], per_type: int, seed: int) -> dict[str, float]:
    """Recall per type (a detection of the type overlapping the value) and negatives flagged."""
    rng = random.Random(seed)
    out: dict[str, float] = {}
    for kind, make in GENERATORS.items():
        hits = 0
        for _ in range(per_type):
            value = make(rng)
            text = rng.choice(TEMPLATES)
            start = text.index("{v}")
            text = text.replace("{v}", value)
            end = start + len(value)
            hits += any(s.type == kind and s.start < end and start < s.end for s in find(text))
        out[kind] = hits / per_type
    out["negatives_flagged"] = sum(bool(find(t)) for t in NEGATIVES) / len(NEGATIVES)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moderation.pii_heldout", description=__doc__.split("\n")[0])
    parser.add_argument("--per-type", type=int, default=400)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--baseline", default=BASELINE)
    args = parser.parse_args(argv)
    old = measure(_baseline(args.baseline).find_pii, args.per_type, args.seed)
    new = measure(pii.find_pii, args.per_type, args.seed)
    print(f"{args.per_type} held-out sentences per type (seed {args.seed}); baseline {args.baseline}\n")
    print("| type | recall before | recall now |\n| --- | --- | --- |")
    for kind in GENERATORS:
        print(f"| {kind} | {old[kind]:.3f} | {new[kind]:.3f} |")
    print(f"| negatives with any detection ({len(NEGATIVES)} sentences) | {old['negatives_flagged']:.2f} "
          f"| {new['negatives_flagged']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
