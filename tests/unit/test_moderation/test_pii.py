"""PII detectors: each type found where it is, validated, and not found where it only looks alike."""

from __future__ import annotations

import gzip
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from policies.moderation.pii import PiiSpan, find_pii, iban_valid, luhn_valid, ssn_valid


def found(text: str, kind: str | None = None) -> list[str]:
    return [text[s.start:s.end] for s in find_pii(text) if kind is None or s.type == kind]


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("email", "write to jane.doe+news@example.co.uk today", "jane.doe+news@example.co.uk"),
    ("email", "Contact: MilenaRossi@rhyta.com.", "MilenaRossi@rhyta.com"),
    ("phone", "call me at (415) 555-0132 tonight", "(415) 555-0132"),
    ("phone", "Desk: +41 (0)62 585 51 90", "+41 (0)62 585 51 90"),
    ("phone", "their line is 463-612-6138x036", "463-612-6138x036"),
    ("phone", "Mobile: 0341 8387176", "0341 8387176"),
    ("phone", "Phone:\n451 5986", "451 5986"),
    ("phone", "reach her on 03.93.92.16.85", "03.93.92.16.85"),
    ("phone", "Fax: 9498777106", "9498777106"),
    ("credit_card", "card 4111 1111 1111 1111 expires", "4111 1111 1111 1111"),
    ("credit_card", "pay with 4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("credit_card", "amex 378282246310005", "378282246310005"),
    ("iban", "IBAN: DE89 3704 0044 0532 0130 00, thanks", "DE89 3704 0044 0532 0130 00"),
    ("iban", "my iban is gb82west12345698765432 ok", "gb82west12345698765432"),
    ("us_ssn", "SSN 078-05-1121 on file", "078-05-1121"),
    ("us_ssn", "social security number: 078051121", "078051121"),
    ("ip_address", "blocked from 8.8.4.4 again", "8.8.4.4"),
    ("ip_address", "v6 2001:4860:4860::8888 works", "2001:4860:4860::8888"),
    ("secret", "key sk-proj-abcDEF1234567890abcdefGHIJ works", "sk-proj-abcDEF1234567890abcdefGHIJ"),
    ("secret", "aws AKIAIOSFODNN7EXAMPLE id", "AKIAIOSFODNN7EXAMPLE"),
    ("secret", "token ghp_" + "a1B2" * 9 + " leaked", "ghp_" + "a1B2" * 9),
    ("secret", "slack xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF"),
    ("secret", "Authorization: Bearer 9f8e7d6c5b4a3f2e1d0c9b8a7", "9f8e7d6c5b4a3f2e1d0c9b8a7"),
    ("secret", 'api_key = "Zx81kQ02mNv7TtPq55rW"', "Zx81kQ02mNv7TtPq55rW"),
    ("secret", "here: Qm8xT2vRp9LsK4wZ7nYb3HcD6fJa1GeU0iOq5 done", "Qm8xT2vRp9LsK4wZ7nYb3HcD6fJa1GeU0iOq5"),
])
def test_finds_each_type(kind: str, text: str, value: str) -> None:
    assert found(text, kind) == [value]


@pytest.mark.parametrize(("kind", "text"), [
    ("email", "the decorator @property and user@localhost are not addresses"),
    ("email", "a..b@example.com has a double dot"),
    ("phone", "the years 1990-2000 and 2019-2023"),
    ("phone", "on 2021-03-04 at 10:30:00"),
    ("phone", "pi is 3.14159265 and e is 2.7182818"),
    ("phone", "values 180 120 60 30 and 203 166 136 112 91"),
    ("phone", "the restaurant is at 17151 2450 Crown St"),
    ("phone", "timestamp 1700000000 and 1699999999"),
    ("phone", "binary 1001 0011 1101 0111"),
    ("phone", "the Suicide & Crisis Lifeline is 1-800-273-8255"),
    ("phone", "supply 31.000.000 tokens"),
    ("credit_card", "4111 1111 1111 1112 fails Luhn"),
    ("credit_card", "order 1234567812345670 starts with 1"),
    ("iban", "DE89 3704 0044 0532 0130 01 fails mod-97"),
    ("iban", "ZZ12 3456 7890 1234 5678 is no country"),
    ("us_ssn", "078-05-112 is short and 000-12-3456 has area 000"),
    ("us_ssn", "666-12-3456 and 912-34-5678 are never issued"),
    ("us_ssn", "a bare 078051121 without words about it"),
    ("ip_address", "version 1.2.3 and 999.1.1.1"),
    ("ip_address", "private 10.0.0.1, 192.168.1.20 and loopback 127.0.0.1"),
    ("ip_address", "C++ std::vector and a::b, ratio 1:8:28:70:56:28:8:1"),
    ("secret", "getElementsByClassNameForTheWin and MyVeryLongClassName2Factory"),
    ("secret", "commit 3f2a9c1e7b4d5a6f8e9d0c1b2a3f4e5d6c7b8a9f and uuid 550e8400-e29b-41d4-a716-446655440000"),
    ("secret", "inst/MetFamily/www/img/2019_wch_logo_de_invertiert.png"),
    ("secret", 'api_key = os.environ["OPENAI_API_KEY"] or "YOUR_API_KEY_HERE_12345"'),
    ("secret", "basic personality traits and the secret organization"),
])
def test_does_not_find_look_alikes(kind: str, text: str) -> None:
    assert found(text, kind) == []


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and iban_valid("gb82west12345698765432")
    assert not iban_valid("GB82WEST12345698765433") and not iban_valid("GB82WEST1234569876543")
    assert ssn_valid("078", "05", "1121")
    assert not any(ssn_valid(*parts) for parts in [("000", "12", "3456"), ("666", "12", "3456"),
                                                    ("900", "12", "3456"), ("123", "00", "4567"),
                                                    ("123", "45", "0000"), ("111", "11", "1111")])


def test_spans_do_not_overlap_and_the_more_specific_type_wins() -> None:
    text = "card 4111111111111111, ssn 078-05-1121, mail a@example.org, ip 8.8.8.8"
    spans = find_pii(text)
    assert [s.type for s in spans] == ["credit_card", "us_ssn", "email", "ip_address"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))


def test_only_the_requested_types() -> None:
    text = "mail a@example.org or call (415) 555-0132"
    assert [s.type for s in find_pii(text, {"phone"})] == ["phone"]
    assert find_pii(text, set()) == []
    assert find_pii("", {"email"}) == []


def test_span_positions() -> None:
    assert find_pii("x a@b.io y") == [PiiSpan("email", 2, 8)]


PRESIDIO_TYPES = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card",
                  "IBAN_CODE": "iban", "US_SSN": "us_ssn", "IP_ADDRESS": "ip_address"}


def presidio_counts(path: Path) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(true positives, gold spans, detections) per type; a span matches if it overlaps one of its type."""
    tp: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            spans = [(PRESIDIO_TYPES[s["entity_type"]], s["start"], s["end"]) for s in row["spans"]
                     if s["entity_type"] in PRESIDIO_TYPES]
            found_spans = find_pii(row["text"])
            for kind, start, end in spans:
                gold[kind] += 1
                tp[kind] += any(d.type == kind and d.start < end and start < d.end for d in found_spans)
            for d in found_spans:
                detected[d.type] += 1
                detected[d.type + ":fp"] += not any(k == d.type and d.start < e and s < d.end for k, s, e in spans)
    return tp, gold, detected


def test_recall_and_precision_on_the_presidio_synthetic_set(data_dir: Path) -> None:
    tp, gold, detected = presidio_counts(data_dir / "pii_presidio_synth" / "train.jsonl.gz")
    for kind in ("email", "phone", "credit_card", "iban", "us_ssn"):
        assert tp[kind] / gold[kind] >= 0.95, f"{kind} recall {tp[kind]}/{gold[kind]}"
    for kind in ("email", "phone", "credit_card", "iban", "us_ssn", "ip_address"):
        precision = 1 - detected[kind + ":fp"] / max(detected[kind], 1)
        assert precision >= 0.9, f"{kind} precision {precision:.3f}"


def test_a_valid_number_in_groups_is_a_phone_without_a_word_saying_so() -> None:
    # libphonenumber (phonenumbers) validates what the shape alone leaves in doubt
    from policies.moderation.pii import is_valid_phone

    assert [s.type for s in find_pii("Her number is 415 555 2671, ask her.")] == ["phone"]
    assert is_valid_phone("+44 20 7946 0958") and is_valid_phone("0044 20 7946 0958")
    assert not is_valid_phone("123 456 7890") and not is_valid_phone("8 336 817")


def test_a_number_after_a_plus_is_a_phone_not_a_card() -> None:
    # "+44 121 257 6843" passes Luhn by chance: a card is never written with a country prefix
    assert [s.type for s in find_pii("Call +44 121 257 6843 today.")] == ["phone"]
