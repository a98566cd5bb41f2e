"""Short English reviews labelled by sentiment, written for the course: the English task of Lab 25.

:mod:`tinylm.data.reviews` holds real Chinese reviews; no labelled English reviews ship with the
course's packages, so these were written by hand for :mod:`tinylm.usage.prompting` (products,
restaurants, hotels, films and books; some positive ones say "not bad", some negative ones
praise one thing before the complaint, so that the words "good" and "bad" alone do not decide).
Labels follow :data:`tinylm.data.reviews.SENTIMENT_LABELS`: 0 negative, 1 positive.

``DEMONSTRATIONS`` (8 of each label) are the pool a few-shot prompt draws its examples from;
``TEST`` (32 of each label) are the reviews the model is asked about.  No text is in both.
"""

from __future__ import annotations

NEGATIVE, POSITIVE = 0, 1

DEMONSTRATIONS: list[tuple[str, int]] = [
    ("The battery died after two days and support never replied.", NEGATIVE),
    ("Absolutely loved this blender, it crushes ice in seconds.", POSITIVE),
    ("The soup was cold and the waiter was rude.", NEGATIVE),
    ("A charming hotel with a friendly staff and a great view.", POSITIVE),
    ("Boring plot, wooden acting, I walked out halfway.", NEGATIVE),
    ("This book kept me up all night, wonderful characters.", POSITIVE),
    ("The shoes fell apart after one week of light use.", NEGATIVE),
    ("Fast delivery and the headphones sound amazing.", POSITIVE),
    ("Overpriced and the room smelled of smoke.", NEGATIVE),
    ("The kids had a great time and so did we.", POSITIVE),
    ("The app crashes every time I open the camera.", NEGATIVE),
    ("Best pizza in town, crispy crust and fresh toppings.", POSITIVE),
    ("The instructions were useless and two screws were missing.", NEGATIVE),
    ("A moving film with a beautiful soundtrack.", POSITIVE),
    ("I waited an hour for a table and the food was bland.", NEGATIVE),
    ("Comfortable, sturdy and easy to assemble. Recommended.", POSITIVE),
]

TEST: list[tuple[str, int]] = [
    ("Terrible quality, the handle snapped on the first day.", NEGATIVE),
    ("The staff went out of their way to help us.", POSITIVE),
    ("Not worth the money at all.", NEGATIVE),
    ("Great value, I would buy it again.", POSITIVE),
    ("The screen is dim and the speakers crackle.", NEGATIVE),
    ("Delicious food and a cozy atmosphere.", POSITIVE),
    ("The plot made no sense and the ending was worse.", NEGATIVE),
    ("My new favourite coffee shop.", POSITIVE),
    ("It stopped working after a month.", NEGATIVE),
    ("The room was spotless and the bed was very comfortable.", POSITIVE),
    ("Customer service hung up on me twice.", NEGATIVE),
    ("A delightful read from start to finish.", POSITIVE),
    ("The package arrived damaged and half the parts were broken.", NEGATIVE),
    ("Works exactly as described, very happy with it.", POSITIVE),
    ("The noise from the street kept us awake all night.", NEGATIVE),
    ("The actors were superb and the story was gripping.", POSITIVE),
    ("Way too salty, I could not finish my plate.", NEGATIVE),
    ("Not bad at all, better than I expected.", POSITIVE),
    ("The design is pretty, but it breaks if you look at it.", NEGATIVE),
    ("Quick, friendly and reliable. Five stars.", POSITIVE),
    ("I regret buying this vacuum, it barely picks up dust.", NEGATIVE),
    ("The hike was stunning and the guide was fun.", POSITIVE),
    ("A dull, predictable sequel.", NEGATIVE),
    ("The cake was moist and not too sweet, perfect.", POSITIVE),
    ("The charger overheats and smells of burning plastic.", NEGATIVE),
    ("I was worried at first, but it turned out great.", POSITIVE),
    ("Nice location, but the staff were unhelpful and the room was dirty.", NEGATIVE),
    ("This keyboard is a joy to type on.", POSITIVE),
    ("The fish tasted off and I felt sick afterwards.", NEGATIVE),
    ("Simple to set up and the picture is crystal clear.", POSITIVE),
    ("Two hours of my life I will never get back.", NEGATIVE),
    ("The teacher explained everything clearly and patiently.", POSITIVE),
    ("The jacket is thin and does not keep out the rain.", NEGATIVE),
    ("Our waiter was attentive and the wine list was excellent.", POSITIVE),
    ("The update made my phone slower than before.", NEGATIVE),
    ("Lovely little museum, well worth a visit.", POSITIVE),
    ("The seats were cramped and the flight was late.", NEGATIVE),
    ("The tent kept us dry through a whole night of rain.", POSITIVE),
    ("Flimsy plastic, it cracked when I tightened the lid.", NEGATIVE),
    ("An inspiring documentary, everyone should see it.", POSITIVE),
    ("The hotel pool was closed and nobody told us.", NEGATIVE),
    ("The soup was rich and full of flavour.", POSITIVE),
    ("Confusing menus and a battery that drains overnight.", NEGATIVE),
    ("These boots are warm, light and waterproof.", POSITIVE),
    ("The book is padded with repetition and says very little.", NEGATIVE),
    ("Our plumber arrived on time and fixed the leak fast.", POSITIVE),
    ("The colours faded after the first wash.", NEGATIVE),
    ("A fun game for the whole family.", POSITIVE),
    ("The delivery was three weeks late and nobody apologised.", NEGATIVE),
    ("The bread is fresh every morning, I go there daily.", POSITIVE),
    ("I cannot recommend this place to anyone.", NEGATIVE),
    ("Clean rooms, kind staff, a perfect weekend.", POSITIVE),
    ("The sound keeps cutting out during calls.", NEGATIVE),
    ("The new album is their best work yet.", POSITIVE),
    ("The mattress sagged within a month.", NEGATIVE),
    ("Every dish we tried was a hit.", POSITIVE),
    ("The tour guide was late and seemed bored.", NEGATIVE),
    ("This lamp looks great and gives a warm light.", POSITIVE),
    ("The printer jams on every second page.", NEGATIVE),
    ("Well written, funny and surprisingly wise.", POSITIVE),
    ("The paint peeled off the wall within a week.", NEGATIVE),
    ("Excellent course, I learned a lot.", POSITIVE),
    ("The coffee was burnt and the milk was sour.", NEGATIVE),
    ("The bike rides smoothly and the brakes are strong.", POSITIVE),
]
