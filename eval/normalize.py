"""English text normalisation for WER/CER: both references and hypotheses go through `normalize_text`.

    "Mr. Smith paid $400, didn't he?"  ->  "mr smith paid four hundred didn't he"   (numbers_to_words=True)

Lower-case, Unicode NFKC, curly quotes to straight, punctuation (hyphens included) to spaces, apostrophes kept
inside words, digits optionally spelled out (integers and decimals), spaces collapsed.
"""

import re
import unicodedata

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]


def number_to_words(n: int) -> str:
    """Cardinal English words for a non-negative integer: 1905 -> 'one thousand nine hundred five'."""
    if n < 0:
        raise ValueError(f"number_to_words needs n >= 0, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _spell(match: re.Match) -> str:
    whole, frac = match.group(1).replace(",", ""), match.group(2)
    words = number_to_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words} "


def normalize_text(text: str, numbers_to_words: bool = False) -> str:
    """Normalised form of `text` for error-rate scoring (see the module docstring)."""
    if not isinstance(text, str):
        raise ValueError(f"normalize_text expects a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    if numbers_to_words:
        text = re.sub(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?", _spell, text)
    text = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", text)  # quotes, not apostrophes inside words
    text = re.sub(r"[^\w\s']|_", " ", text)
    return re.sub(r"\s+", " ", text).strip()
