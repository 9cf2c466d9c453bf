-- Every name a person reads — a workspace's name, a canvas's title, an invited email, a file's
-- name — follows one rule (internal.is_display_text, sql/core/display_text.sql): no control
-- character (a newline, ESC sequences that drive the terminal of whoever lists it, BEL), no
-- invisible or direction-changing character, no blank-looking filler. Only filenames had it: a
-- workspace named "a\nb\e[31mred" or "\u200b\u200b" (blank), or a canvas titled "\e]0;pwned\a",
-- was stored and served as is; so was a name made only of joiners (U+200C, U+200D), of no-break
-- or ideographic spaces, which reads as blank. Refused with invalid_input naming the field;
-- nothing is written.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(36);

select tests.create_user('names_owner');
create temp table ids (workspace_id uuid, canvas_id uuid);
grant all on ids to authenticated;

create temp table bad (name text, value text);
insert into bad values
  ('a newline', E'a\nb'),
  ('a tab', E'a\tb'),
  ('an ESC sequence', E'\u001b[31mred'),
  ('a right-to-left override', 'invoice' || chr(x'202E'::int) || 'fdp'),
  ('only zero-width spaces', chr(x'200B'::int) || chr(x'200B'::int)),
  ('a line separator', 'a' || chr(x'2028'::int) || 'b'),
  ('only a Hangul filler', chr(x'3164'::int)),
  -- the joiners are allowed between letters, not as a whole name; nor are spaces other than
  -- U+0020 (which btrim takes) or format characters that only mark what follows
  ('only zero-width joiners', chr(x'200C'::int) || chr(x'200D'::int) || chr(x'200C'::int)),
  ('only joiners and spaces', chr(x'200D'::int) || ' ' || chr(x'200C'::int)),
  ('only no-break spaces', chr(x'00A0'::int) || chr(x'00A0'::int)),
  ('only an ideographic space', chr(x'3000'::int)),
  ('only an Arabic number sign', chr(x'0600'::int)),
  ('a word joiner and a BOM', chr(x'2060'::int) || chr(x'FEFF'::int)),
  ('a musical beam control', 'a' || chr(x'1D173'::int) || 'b'),
  ('an Egyptian hieroglyph format control', 'a' || chr(x'13430'::int) || 'b');
grant select on bad to authenticated;

select tests.authenticate_as('names_owner');
insert into ids (workspace_id) select (api.create_workspace('Names') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Names') ->> 'canvas_id')::uuid;

-- workspace names: create and rename
select is(tests.error_of(format('select api.create_workspace(%L)', b.value)),
          '{"state": "PX400", "code": "invalid_input", "field": "name"}',
          format('a workspace name with %s: invalid_input name', b.name))
from bad b order by b.name;
select is(tests.error_of(format('select api.rename_workspace(%L, %L)', (select workspace_id from ids), E'x\ny')),
          '{"state": "PX400", "code": "invalid_input", "field": "name"}', 'renaming to such a name too');

-- canvas titles: create and update
select is(tests.error_of(format('select api.create_canvas(%L, %L)', (select workspace_id from ids), b.value)),
          '{"state": "PX400", "code": "invalid_input", "field": "title"}',
          format('a canvas title with %s: invalid_input title', b.name))
from bad b order by b.name;
select is(tests.error_of(format('select api.update_canvas(%L, %L, null)', (select canvas_id from ids), E'\u0007bell')),
          '{"state": "PX400", "code": "invalid_input", "field": "title"}', 'updating to such a title too');

-- an invited email
select is(tests.error_of(format('select api.add_workspace_member(%L, %L, %L)', (select workspace_id from ids), E'evil\u001b[2J@test.local', 'viewer')),
          '{"state": "PX400", "code": "invalid_input", "field": "email"}', 'an invited email with an ESC sequence: invalid_input email');

-- what people write stays allowed
select is(api.create_workspace('Grüße 日本 😀 family 👨‍👩‍👧 نامه‌ها') ->> 'name', 'Grüße 日本 😀 family 👨‍👩‍👧 نامه‌ها',
          'letters of any script, emoji and the joiners (U+200C, U+200D) stay allowed');
select is(api.create_workspace('Q' || chr(x'00A0'::int) || '3' || chr(x'3000'::int) || '報告') ->> 'name', 'Q' || chr(x'00A0'::int) || '3' || chr(x'3000'::int) || '報告',
          'spaces of any kind stay allowed between what shows');
select tests.clear_authentication();

select is((select count(*)::int from app.workspaces w join app.workspace_members m using (workspace_id)
           where m.user_id = tests.user_id('names_owner')), 3, 'no refused name was written');

select * from finish();
rollback;
