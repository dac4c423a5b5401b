"""The words of the demo corpus: the sentences its PDFs' pages and its long text are written
from (``SENTENCES``, by topic), and the short text files (``TEXTS``, by file name).

The last five texts back the demo's exact-word queries (``corpus.DEMO_QRELS``): a care sheet
that says "pump", "error", "seal", "replacement", "service" and "visit" once each, as a query
types them, and four station logs that use the same words mostly inflected ("pumps",
"replaced", "serviced"), each but the west one carrying one identifier: an error code, a part
number, a technician's name.
"""

from __future__ import annotations

# The sentences that the PDFs' pages and the long text's sections are written from.
SENTENCES = {
    "river-ecology": """
Rivers carry nutrients, sediment and organisms from headwater streams to the sea.
Riffles oxygenate the water, while slow pools shelter fish during summer droughts.
Mayfly and stonefly larvae are sensitive to pollution and serve as indicator species.
Floodplain forests store floodwater and release it slowly back into the channel.
Beavers build dams that raise water tables and create wetlands for amphibians.
Salmon return upstream to spawn and bring marine nitrogen into inland food webs.
""",
    "bridge-engineering": """
A beam bridge carries its load in bending, so its spans stay short without deep girders.
Arches turn vertical loads into compression, which stone and concrete resist well.
Suspension bridges hang the deck from cables draped over towers and anchored ashore.
Engineers check every design for wind flutter since the collapse at Tacoma Narrows.
Expansion joints let the deck grow and shrink with temperature without cracking.
Steel trusses use triangles so that each member works in tension or compression.
""",
    "jazz-history": """
Jazz grew in New Orleans from blues, ragtime, brass bands and church music.
Louis Armstrong made the improvised solo the centre of the jazz performance.
Swing orchestras led by Duke Ellington and Count Basie filled the dance halls.
Bebop musicians such as Charlie Parker played fast, complex harmonic lines.
Miles Davis explored modal jazz on Kind of Blue, built on slow-moving scales.
""",
    "astronomy-history": """
Hipparchus catalogued the brightest stars and discovered the precession of the equinoxes.
Ptolemy's Almagest described a sky of nested circles that lasted fourteen centuries.
Al-Sufi's Book of Fixed Stars recorded the Andromeda nebula as a small cloud.
Copernicus placed the Sun at the centre and set the Earth among the planets.
Tycho Brahe measured planetary positions with instruments of unmatched precision.
Kepler used Tycho's tables to show that planets move on ellipses, not circles.
Galileo turned a telescope to Jupiter and found four moons circling it.
William Herschel found Uranus and mapped the shape of the Milky Way by counting stars.
Henrietta Leavitt found that Cepheid stars pulse at a pace set by their brightness.
Edwin Hubble used Cepheids to show that the spiral nebulae are galaxies far beyond our own.
Vera Rubin measured how galaxies rotate and found evidence of unseen dark matter.
""",
}

TEXTS = {
    "sourdough-baking.txt": """Sourdough baking

A sourdough starter is a living culture of wild yeast and lactic acid bacteria. Fed with flour
and water every day, it leavens bread without commercial yeast. Long, cool fermentation gives a
tangy flavour and an open crumb; bakers fold the dough instead of kneading it.
""",
    "alpine-cuisine.md": """# Alpine cuisine

In Zürich and Genève, winter means fondue and raclette with melted Gruyère. Rösti — grated
potato fried crisp in butter — comes with almost every meal, and in Chamonix a crème brûlée and
a café crème follow a day on the slopes for about 12 €.
""",
    "lisbon-tiles.txt": """Lisbon tiles

The azulejos of São Bento station tell the history of Portugal in blue and white. Tiles cover
façades from Alfama to the Praça do Comércio, and workshops in the Açores and in Óbidos still
paint them by hand.
""",
    "tide-pools.txt": """Tide pools

At low tide, rocky shores hold pools of seawater full of life. Sea anemones close to keep from
drying out, hermit crabs trade shells as they grow, and starfish pry open mussels with patient
suction until the sea returns.
""",
    "station-care.txt": """# Station care

If the pump shows an error, restart it once. A dripping seal needs a replacement. Book a
service visit every six months. Keep the guard closed while it runs, write down the hours
run each week, keep the room above five degrees in winter and the inlet clear of leaves.
""",
    "north-station-log.txt": """North station log

14 March. Both pumps tripped overnight; pump 2 logged errors, the last one E4471. Its bearing
housing had cracked and was replaced, seals checked, pumps serviced and visited again the
next day.
""",
    "south-station-log.txt": """South station log

2 May. Slow leak at the booster's shaft: worn seals replaced with cartridge seal KX7730, two
spares ordered. Pumps serviced and visited weekly since; no errors logged.
""",
    "east-station-log.txt": """East station log

21 June. Routine visit by Adaeze Okonkwo: pumps serviced, filters replaced, seals dry, no
errors logged. Duty and standby pumps swapped so that both wear evenly; visits are monthly.
""",
    "west-station-log.txt": """West station log

9 April. Pumps serviced, worn seals replaced, old errors cleared; visited again a week later.
""",
}
