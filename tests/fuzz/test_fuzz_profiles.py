"""Profile YAML files, generated: ``load_file`` gives a Profile or Problems, each with a line >= 1."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from paperwire.models import Profile
from paperwire.profiles import load_file

GOOD = {
    "id": "ada",
    "email": "ada@example.org",
    "name": "Ada",
    "topics": [{"name": "LLM inference", "description": "serving large language models", "keywords": ["KV cache"],
                "seed_papers": ["2611.90024"], "min_score": 0.4}],
    "delivery": {"mode": "instant", "hour": 8, "timezone": "Europe/London", "quiet_hours": "22-07"},
    "trending": {"enabled": True, "max": 3},
}
KEYS = ["id", "email", "name", "enabled", "topics", "delivery", "trending", "description", "keywords", "exclude",
        "seed_papers", "authors", "categories", "min_score", "mode", "hour", "weekday", "timezone", "max_papers",
        "send_updates", "quiet_hours", "max", "min_upvotes", "bogus"]
scalars = (
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.sampled_from(["instant", "daily", "UTC", "Mars/Olympus", "22-07", "25-99", "2611.90024"])
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5), max_leaves=20)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A YAML text: a valid profile with parts replaced, arbitrary structure, or broken text."""
    how = draw(st.sampled_from(["edit", "random", "text"]))
    if how == "edit":
        doc = yaml.safe_load(yaml.safe_dump(GOOD))
        parts = [doc, doc["topics"][0], doc["delivery"], doc["trending"]]  # taken before any edit
        for _ in range(draw(st.integers(1, 4))):
            where = draw(st.sampled_from(parts))
            where[draw(st.sampled_from(KEYS))] = draw(values)
        return yaml.safe_dump(doc, allow_unicode=True)
    if how == "random":
        return yaml.safe_dump(draw(values), allow_unicode=True)
    text = yaml.safe_dump(GOOD)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"%@`#\n\t ") + ["\x00", "é"]),
                                    max_size=10)) + text[at + draw(st.integers(0, 10)):]


@given(text=documents())
def test_profile_file_gives_a_profile_or_problems_with_lines(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        profile, problems = load_file(path)
    if profile is not None:
        assert problems == [] and isinstance(profile, Profile)
        Profile.model_validate_json(profile.model_dump_json())  # what profiles sync stores reads back
    else:
        assert problems, "a refused file says why"
        for p in problems:
            assert p.line >= 1 and p.message.strip() and str(p).startswith(f"{path}:{p.line}: ")
