"""The parts of a voice reply: sentence cutting, whole WAV files, and the utterance group's placement."""

import io
import wave
from dataclasses import dataclass

from runtime.sessions.group import UtteranceGroup
from runtime.sessions.sentences import SentenceSplitter
from runtime.sessions.wav import complete_wav, wav_info
from tests.runtime.sessions.speech_fakes import fake_wav


def test_sentences_come_out_as_soon_as_they_end():
    splitter = SentenceSplitter()
    out = []
    for delta in ["Hello", " there", ". How", " are you", "? Pi is 3", ".14 and", " fine!", "\nNext line", " without end"]:
        out.append(splitter.feed(delta))
    assert out == [[], [], ["Hello there."], [], ["How are you?"], [], [], ["Pi is 3.14 and fine!"], []]
    assert splitter.flush() == "Next line without end" and splitter.flush() is None


def test_short_pieces_wait_for_the_next_sentence():
    splitter = SentenceSplitter()
    assert splitter.feed("Hi. Ok. ") == []
    assert splitter.feed("I can help with that. ") == ["Hi. Ok. I can help with that."]
    assert SentenceSplitter().feed("你好。今天天气很好。") == ["你好。今天天气很好。"]


def test_a_streamed_wav_gets_its_sizes():
    streamed = fake_wav(b"abcdef", rate=22050, sizes=0xFFFFFFFF)
    whole = complete_wav(streamed)
    with wave.open(io.BytesIO(whole)) as w:
        assert (w.getframerate(), w.getnframes()) == (22050, 3)
    assert wav_info(whole).sample_rate == 22050 and wav_info(b"not a wav") is None
    assert complete_wav(b"ID3 mp3 bytes") == b"ID3 mp3 bytes"


@dataclass
class _Replica:
    replica_id: str


@dataclass
class _Route:
    replica: _Replica
    node_id: str
    max_concurrency: int = 1


def routes_from(table):
    """{model: [(replica_id, node_id), ...]} as routes_of."""
    def routes_of(model):
        return [_Route(_Replica(r), n) for r, n in table.get(model, [])]
    return routes_of


MODELS = {"asr": "whisper", "llm": "gemma", "tts": "piper"}


def test_the_node_serving_the_whole_pipeline_wins_over_a_less_loaded_one():
    table = {"whisper": [("a1", "A")], "gemma": [("g1", "A"), ("g2", "B")], "piper": [("p1", "A"), ("p2", "B")]}
    load = {"g1": 5.0, "g2": 0.0}
    group = UtteranceGroup()
    pin = group.place("llm", MODELS, routes_from(table), lambda r: load.get(r.replica.replica_id, 0.0))
    assert (pin.replica_id, pin.node_id) == ("g1", "A")
    assert group.place("tts", MODELS, routes_from(table), lambda r: 0.0).replica_id == "p1"


def test_a_lost_stage_is_re_pinned_alone_near_the_others():
    table = {"whisper": [("a1", "A")], "gemma": [("g1", "A"), ("g2", "B")], "piper": [("p1", "A"), ("p3", "A"),
                                                                                       ("p2", "B")]}
    group = UtteranceGroup()
    for stage in ("asr", "llm", "tts"):
        group.place(stage, MODELS, routes_from(table), lambda r: 0.0)
    assert {s: p.replica_id for s, p in group.pins.items()} == {"asr": "a1", "llm": "g1", "tts": "p1"}
    table["piper"] = [("p3", "A"), ("p2", "B")]  # p1 is gone: another replica on the group's node
    loads = {"p3": 3.0}
    assert group.place("tts", MODELS, routes_from(table), lambda r: loads.get(r.replica.replica_id, 0.0)
                       ).replica_id == "p3"
    table["piper"] = [("p2", "B")]
    assert group.place("tts", MODELS, routes_from(table), lambda r: 0.0).node_id == "B"
    assert {s: p.replica_id for s, p in group.pins.items()} == {"asr": "a1", "llm": "g1", "tts": "p2"}
    table["gemma"] = []  # nothing ready: the pin stays, the dispatcher answers 503
    assert group.place("llm", MODELS, routes_from(table), lambda r: 0.0).replica_id == "g1"
