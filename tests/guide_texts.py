"""Benign stand-in "guides" for the TLSH and document tests: an assembly guide and a recipe
with neutral placeholder keywords (``bluebird``, ``teapot-42``), and small edits of them the
way a re-post changes a text."""

from __future__ import annotations

#: the neutral test keyword list (docs/models-and-keywords.md: placeholders, never real terms)
KEYWORDS = ("bluebird", "teapot-42")

ASSEMBLY_GUIDE = """\
Bookshelf assembly guide (DEMO-benign-stand-in)

Before you start, lay every panel on a soft blanket and check the parts list: two side panels,
one top, one base, four shelves, a back board, sixteen cam locks, sixteen dowels, thirty-two
short screws and a bag of shelf pins. You need a cross-head screwdriver and a rubber mallet.

Step 1. Push the wooden dowels into the holes on the inside of the left side panel. Tap them
gently with the mallet until only half of each dowel shows.
Step 2. Fit the base onto the dowels so that the finished edge faces forward. Turn each cam
lock a quarter turn clockwise until it bites; do not force it.
Step 3. Repeat with the top panel, then lower the right side panel onto the free dowels and
lock the cams on both ends. The bluebird marking on each panel points to the front.
Step 4. Slide the back board into the groove from the top and fix it with the short screws,
one every twenty centimetres, starting from the corners.
Step 5. Insert the shelf pins at the heights you want and rest the four shelves on them.
Keep the heaviest books on the lowest shelf. Tighten every screw again after a week.
If a cam lock spins without gripping, replace it with a spare from the teapot-42 bag.

Fixing the shelf to the wall. A tall bookshelf must be anchored so that it cannot tip over.
Hold the shelf against the wall, mark the two holes of the top bracket with a pencil and move
the shelf away. Drill with a six millimetre bit, push in the wall plugs and screw the brackets
on loosely. Put the shelf back, line up the brackets with the holes in the top panel and
tighten both screws. On a plasterboard wall use the cavity fixings from the small bag instead.

Looking after the finish. Wipe the panels with a dry cloth; a damp one is fine for marks, but
dry the surface straight away because water swells the edges of the board. Do not place the
shelf right next to a radiator or in full sun, which fades the colour unevenly over a summer.
Small scratches can be hidden with a wax crayon of a matching shade, rubbed in and polished.

Troubleshooting. If the doors or shelves sit crooked, the floor is probably uneven: turn the
adjustable feet under the base until a spirit level laid on the top panel shows it flat. If
the back board bulges, one of the screws has missed the side panel; take it out, check the
groove and drive it in again a little further along. A shelf that sags in the middle can be
turned over so that the bend points upwards, and it will straighten again within a few weeks.
Keep this sheet with the spare parts so the next owner can take the shelf apart and rebuild it.
"""

#: the same guide re-posted: a new title, a few words changed, a clause dropped, a line added,
#: a heading re-cased and a paragraph re-wrapped (TLSH of the normalised text: distance 8)
ASSEMBLY_GUIDE_REPOST = (
    ASSEMBLY_GUIDE.replace("(DEMO-benign-stand-in)", "reposted")
    .replace("lowest", "bottom")
    .replace("; do not force it", "")
    .replace("rubber mallet", "mallet")
    .replace("Troubleshooting.", "TROUBLESHOOTING.")
    .replace("Tap them\ngently", "Tap\nthem gently")
    + "Thanks for reading, share it with your friends.\n"
)

RECIPE = """\
Lemon sponge cake

Heat the oven to 180 degrees and butter a round tin. Beat two hundred grams of soft butter
with the same weight of caster sugar until pale, then add four eggs one at a time, beating
well after each. Fold in two hundred grams of self-raising flour, the zest of two lemons and
a splash of milk. Pour the batter into the tin and bake for about forty minutes, until a
skewer comes out clean. Let it cool for ten minutes before turning it out onto a rack.
Mix the juice of the lemons with icing sugar and pour it over while the cake is still warm.
"""
