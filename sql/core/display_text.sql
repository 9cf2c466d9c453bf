-- Text a person reads as a name — a file's name, a workspace's name, a canvas's title — holds
-- nothing that displays as something else or as nothing: no control character (a newline, a tab,
-- ESC sequences that drive the terminal of whoever lists it, BEL), none of Unicode's invisible
-- format characters (zero-width, bidi embeddings, overrides and isolates, BOM, tags, the format
-- controls of Egyptian hieroglyphs, shorthand and musical notation), line or paragraph
-- separators, nor the blank-looking fillers (Hangul, Khmer, Mongolian, braille, the grapheme
-- joiner), which make a name read as another (evil<U+202E>fdp.exe shows as evilexe.pdf) or as
-- blank. The joiners U+200C/U+200D stay allowed: Persian and Indic words and emoji sequences need
-- them. And it shows something: at least one character that is not a space of any kind (U+00A0,
-- U+3000, …), a joiner, or a format character that only marks the characters after it (the
-- Arabic, Syriac and Kaithi number signs): a name made only of those reads as blank, as "   ".
-- Each caller refuses a name that is not with invalid_input on its field.
-- An SQL function the planner inlines (one expression, no SET clause, not SECURITY DEFINER).
create or replace function internal.is_display_text(p_text text) returns boolean
language sql immutable as $$
  select p_text !~ '[[:cntrl:]]'
     and p_text !~ '[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B\u200E\u200F\u2028-\u202E\u2060-\u2064\u2066-\u206F\u2800\u3164\uFEFF\uFFA0\uFFF9-\uFFFB\U00013430-\U0001343F\U0001BCA0-\U0001BCA3\U0001D173-\U0001D17A\U000E0000-\U000E007F]'
     and p_text ~ '[^ \u00A0\u1680\u2000-\u200A\u200C\u200D\u202F\u205F\u3000\u0600-\u0605\u06DD\u070F\u0890\u0891\u08E2\U000110BD\U000110CD]'
$$;
