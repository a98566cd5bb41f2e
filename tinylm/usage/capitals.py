"""Questions with an answer and questions without one: the data of the hallucination study.

A question a program can check needs one right answer, known to everyone, in two languages:
"What is the capital of France?"  :data:`CAPITALS` lists 65 countries whose capital is not in
dispute, each with its capital in English and in Chinese and the other spellings that count as
right (``Kyiv`` or ``Kiev``, ``Washington, D.C.`` or ``Washington``).  Countries with a disputed
or moving capital (South Africa's three, Indonesia's move, Israel) are left out on purpose.

The same question about a country that does not exist has **no** right answer: the only honest
reply is "I don't know" (or "there is no such country").  :func:`invented_countries` makes such
names from syllables, seeded, and checks each against every member of the United Nations
(:data:`UN_MEMBERS`) and against every capital, so that no invented name is a real one.  The Chinese
invented names are strings of characters used to transliterate foreign names (泽, 尔, 瓦, 尼 ...),
checked against the Chinese names of :data:`CAPITALS`.

>>> CAPITALS[0]
Country(name='France', capital='Paris', name_zh='法国', capital_zh='巴黎', aliases=())
>>> question(CAPITALS[0], "en"), question(CAPITALS[0], "zh")
('What is the capital of France?', '法国的首都是哪里？')
>>> len(invented_countries(5, seed=0)) == 5
True
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Country:
    """A country, its capital (the right answer), both in English and Chinese, and other
    spellings of the capital that count as right."""

    name: str
    capital: str
    name_zh: str
    capital_zh: str
    aliases: tuple[str, ...] = ()

    def answers(self, language: str = "en") -> tuple[str, ...]:
        """Every spelling of the capital that counts as right in ``language``; in Chinese the
        English spellings count too (a model may answer a Chinese question in English)."""
        english = (self.capital, *self.aliases)
        return english if language == "en" else (self.capital_zh, *english)


_TABLE = """\
France|Paris|法国|巴黎|
Germany|Berlin|德国|柏林|
Italy|Rome|意大利|罗马|
Spain|Madrid|西班牙|马德里|
Portugal|Lisbon|葡萄牙|里斯本|
United Kingdom|London|英国|伦敦|
Ireland|Dublin|爱尔兰|都柏林|
Netherlands|Amsterdam|荷兰|阿姆斯特丹|
Belgium|Brussels|比利时|布鲁塞尔|
Switzerland|Bern|瑞士|伯尔尼|Berne
Austria|Vienna|奥地利|维也纳|
Poland|Warsaw|波兰|华沙|
Czech Republic|Prague|捷克|布拉格|
Hungary|Budapest|匈牙利|布达佩斯|
Greece|Athens|希腊|雅典|
Sweden|Stockholm|瑞典|斯德哥尔摩|
Norway|Oslo|挪威|奥斯陆|
Finland|Helsinki|芬兰|赫尔辛基|
Denmark|Copenhagen|丹麦|哥本哈根|
Iceland|Reykjavik|冰岛|雷克雅未克|
Russia|Moscow|俄罗斯|莫斯科|
Ukraine|Kyiv|乌克兰|基辅|Kiev
Romania|Bucharest|罗马尼亚|布加勒斯特|
Bulgaria|Sofia|保加利亚|索非亚|
Serbia|Belgrade|塞尔维亚|贝尔格莱德|
Turkey|Ankara|土耳其|安卡拉|
Egypt|Cairo|埃及|开罗|
Kenya|Nairobi|肯尼亚|内罗毕|
Nigeria|Abuja|尼日利亚|阿布贾|
Ethiopia|Addis Ababa|埃塞俄比亚|亚的斯亚贝巴|
Morocco|Rabat|摩洛哥|拉巴特|
Ghana|Accra|加纳|阿克拉|
Senegal|Dakar|塞内加尔|达喀尔|
Algeria|Algiers|阿尔及利亚|阿尔及尔|
Tunisia|Tunis|突尼斯|突尼斯|
China|Beijing|中国|北京|Peking
Japan|Tokyo|日本|东京|
South Korea|Seoul|韩国|首尔|
India|New Delhi|印度|新德里|
Pakistan|Islamabad|巴基斯坦|伊斯兰堡|
Bangladesh|Dhaka|孟加拉国|达卡|
Thailand|Bangkok|泰国|曼谷|
Vietnam|Hanoi|越南|河内|
Philippines|Manila|菲律宾|马尼拉|
Malaysia|Kuala Lumpur|马来西亚|吉隆坡|
Mongolia|Ulaanbaatar|蒙古|乌兰巴托|Ulan Bator
Nepal|Kathmandu|尼泊尔|加德满都|
Iran|Tehran|伊朗|德黑兰|
Iraq|Baghdad|伊拉克|巴格达|
Saudi Arabia|Riyadh|沙特阿拉伯|利雅得|
Afghanistan|Kabul|阿富汗|喀布尔|
Jordan|Amman|约旦|安曼|
Syria|Damascus|叙利亚|大马士革|
United States|Washington, D.C.|美国|华盛顿|Washington
Canada|Ottawa|加拿大|渥太华|
Mexico|Mexico City|墨西哥|墨西哥城|
Cuba|Havana|古巴|哈瓦那|
Brazil|Brasilia|巴西|巴西利亚|
Argentina|Buenos Aires|阿根廷|布宜诺斯艾利斯|
Chile|Santiago|智利|圣地亚哥|
Peru|Lima|秘鲁|利马|
Colombia|Bogota|哥伦比亚|波哥大|
Venezuela|Caracas|委内瑞拉|加拉加斯|
Australia|Canberra|澳大利亚|堪培拉|
New Zealand|Wellington|新西兰|惠灵顿|
"""

CAPITALS: tuple[Country, ...] = tuple(
    Country(name, capital, name_zh, capital_zh, tuple(a for a in aliases.split(";") if a))
    for name, capital, name_zh, capital_zh, aliases in (line.split("|") for line in _TABLE.splitlines())
)
"""The answerable questions: countries with an undisputed capital (accents dropped: Brasilia, Bogota)."""

UN_MEMBERS = tuple(n.strip() for n in """
Afghanistan, Albania, Algeria, Andorra, Angola, Antigua and Barbuda, Argentina, Armenia, Australia,
Austria, Azerbaijan, Bahamas, Bahrain, Bangladesh, Barbados, Belarus, Belgium, Belize, Benin, Bhutan,
Bolivia, Bosnia and Herzegovina, Botswana, Brazil, Brunei, Bulgaria, Burkina Faso, Burundi, Cabo Verde,
Cambodia, Cameroon, Canada, Central African Republic, Chad, Chile, China, Colombia, Comoros, Congo,
Costa Rica, Cote d'Ivoire, Croatia, Cuba, Cyprus, Czech Republic, Czechia, Democratic Republic of the Congo,
Denmark, Djibouti, Dominica, Dominican Republic, Ecuador, Egypt, El Salvador, Equatorial Guinea,
Eritrea, Estonia, Eswatini, Swaziland, Ethiopia, Fiji, Finland, France, Gabon, Gambia, Georgia, Germany,
Ghana, Greece, Grenada, Guatemala, Guinea, Guinea-Bissau, Guyana, Haiti, Honduras, Hungary, Iceland,
India, Indonesia, Iran, Iraq, Ireland, Israel, Italy, Jamaica, Japan, Jordan, Kazakhstan, Kenya,
Kiribati, Kuwait, Kyrgyzstan, Laos, Latvia, Lebanon, Lesotho, Liberia, Libya, Liechtenstein, Lithuania,
Luxembourg, Madagascar, Malawi, Malaysia, Maldives, Mali, Malta, Marshall Islands, Mauritania,
Mauritius, Mexico, Micronesia, Moldova, Monaco, Mongolia, Montenegro, Morocco, Mozambique, Myanmar,
Burma, Namibia, Nauru, Nepal, Netherlands, New Zealand, Nicaragua, Niger, Nigeria, North Korea,
North Macedonia, Macedonia, Norway, Oman, Pakistan, Palau, Panama, Papua New Guinea, Paraguay, Peru,
Philippines, Poland, Portugal, Qatar, Romania, Russia, Rwanda, Saint Kitts and Nevis, Saint Lucia,
Saint Vincent and the Grenadines, Samoa, San Marino, Sao Tome and Principe, Saudi Arabia, Senegal,
Serbia, Seychelles, Sierra Leone, Singapore, Slovakia, Slovenia, Solomon Islands, Somalia,
South Africa, South Korea, South Sudan, Spain, Sri Lanka, Sudan, Suriname, Sweden, Switzerland, Syria,
Tajikistan, Tanzania, Thailand, Timor-Leste, East Timor, Togo, Tonga, Trinidad and Tobago, Tunisia,
Turkey, Turkmenistan, Tuvalu, Uganda, Ukraine, United Arab Emirates, United Kingdom, United States,
Uruguay, Uzbekistan, Vanuatu, Venezuela, Vietnam, Yemen, Zambia, Zimbabwe, Taiwan, Palestine, Kosovo,
Vatican City, Western Sahara
""".replace("\n", " ").split(","))
"""Every member of the United Nations (and a few other names of states), in English: no invented
name may be one of them."""

QUESTIONS = {"en": "What is the capital of {country}?", "zh": "{country}的首都是哪里？"}
"""The question, in each language."""

ABSTAIN_OK = {"en": ' If you do not know, or there is no such country, say "I don\'t know".',
              "zh": "如果你不知道，或者没有这个国家，请说“我不知道”。"}
"""What the second form of the question adds: explicit permission to abstain."""

ANSWER_START = {"en": "The capital of {country} is", "zh": "{country}的首都是"}
"""The start of the assistant's answer, written into the prompt, when the model must name a city
(the confidence measurement): what it writes next is its answer."""

LANGUAGES = ("en", "zh")

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st",
           "t", "tr", "v", "z", "th", "sh", "h")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "au")
_ENDINGS = ("ia", "onia", "avia", "istan", "land", "ania", "ora", "esh", "uria", "ina")
_ZH_SYLLABLES = "泽尔瓦尼卡多利斯坦巴特隆米诺塔维拉克洛贝萨图森奥罗格宁摩"
_ZH_ENDINGS = ("亚", "尼亚", "斯坦", "兰", "里亚", "维亚")


def question(country: Country | str, language: str = "en", abstain_ok: bool = False) -> str:
    """The question about ``country`` (a :class:`Country`, or an invented name) in ``language``;
    with ``abstain_ok`` it adds the permission to say "I don't know"."""
    if language not in LANGUAGES:
        raise ValueError(f"language is one of {LANGUAGES}, got {language!r}")
    name = country if isinstance(country, str) else (country.name if language == "en" else country.name_zh)
    return QUESTIONS[language].format(country=name) + (ABSTAIN_OK[language] if abstain_ok else "")


def answer_start(country: Country | str, language: str = "en") -> str:
    """The beginning of the answer written for the model (see :data:`ANSWER_START`)."""
    if language not in LANGUAGES:
        raise ValueError(f"language is one of {LANGUAGES}, got {language!r}")
    name = country if isinstance(country, str) else (country.name if language == "en" else country.name_zh)
    return ANSWER_START[language].format(country=name)


def _real_names() -> set[str]:
    names = {n.lower() for n in UN_MEMBERS}
    for c in CAPITALS:
        names |= {c.name.lower(), c.capital.lower(), *(a.lower() for a in c.aliases)}
    return names


def invented_countries(n: int, seed: int = 0, language: str = "en") -> list[str]:
    """``n`` different country names that do not exist, made from syllables with a numpy
    generator seeded with ``seed``; none is a UN member, a capital, or (in Chinese) the Chinese
    name of a country of :data:`CAPITALS`."""
    if language not in LANGUAGES:
        raise ValueError(f"language is one of {LANGUAGES}, got {language!r}")
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    rng = np.random.default_rng(seed)
    real = _real_names() | {c.name_zh for c in CAPITALS} | {c.capital_zh for c in CAPITALS}
    out: list[str] = []
    while len(out) < n:
        if language == "en":
            syllables = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(int(rng.integers(1, 3))))
            name = (syllables + rng.choice(_ENDINGS)).capitalize()
        else:
            chars = "".join(rng.choice(list(_ZH_SYLLABLES), size=int(rng.integers(2, 4)), replace=False))
            name = chars + rng.choice(_ZH_ENDINGS)
        if name.lower() not in real and name not in out:
            out.append(name)
    return out


def normalise(text: str) -> str:
    """Lower case, accents dropped (Brasília -> brasilia), every run of punctuation and spaces one
    space: the form in which answers are compared."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def mentions(text: str, answers: tuple[str, ...] | list[str]) -> bool:
    """Does ``text`` name one of ``answers``, as whole words (``Rome`` in "The capital is Rome."
    but not in "Romeo")?  Chinese has no spaces between words, so a Chinese answer only has to
    appear in the text."""
    said = f" {normalise(text)} "
    for answer in answers:
        a = normalise(answer)
        if not a:
            continue
        if a.isascii():
            if f" {a} " in said:
                return True
        elif a in said.replace(" ", ""):
            return True
    return False


def matches(answer: str, answers: tuple[str, ...] | list[str]) -> bool:
    """Is ``answer`` exactly one of ``answers`` once both are normalised (:func:`normalise`)?"""
    a = normalise(answer)
    return bool(a) and any(a == normalise(x) for x in answers)
