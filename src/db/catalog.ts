import type { Sql } from 'postgres';

/**
 * A database's objects as comparable text, to tell whether two databases hold the same logic:
 * functions with their bodies (pg_get_functiondef), policies, triggers, grants (ACLs, sorted so
 * the order grants were given in does not count), default privileges, comments, views, indexes,
 * tables and columns, constraints, types, publications and extensions. Identities are names, never
 * OIDs, so two databases built separately compare equal when they hold the same things.
 * Used by the migrations drift check (tests/integration/migrations.test.ts) and by the fingerprint
 * db:migrate keeps of the schema (schema-drift.ts).
 */
// owner: the relation a column, index, constraint, trigger or policy belongs to
export type CatalogEntry = { kind: string; name: string; def: string; owner?: string };
export type CatalogDifference = { kind: string; name: string; owner?: string; only?: 'left' | 'right'; left?: string; right?: string };

const SKIP_SCHEMAS = `('pg_catalog', 'information_schema', 'pg_toast', 'supabase_migrations', 'tests')`;
const userSchema = (nsp: string) => `${nsp} not in (select oid from pg_namespace where nspname in ${SKIP_SCHEMAS} or nspname like 'pg_temp%' or nspname like 'pg_toast_temp%')`;
// objects an extension made (pgtap's views, vector's functions) are the extension's, not ours
const notFromExtension = (catalog: string, oid: string) =>
  `not exists (select from pg_depend dep where dep.classid = '${catalog}'::regclass and dep.objid = ${oid} and dep.deptype = 'e')`;
const acl = (col: string) => `coalesce((select string_agg(a::text, ',' order by a::text) from unnest(${col}) a), '')`;

const QUERIES: Record<string, string> = {
  schema: `select nspname as name, pg_get_userbyid(nspowner) || ' ' || ${acl('nspacl')} as def
           from pg_namespace n where ${userSchema('n.oid')}`,
  extension: `select extname as name, extversion || ' in ' || extnamespace::regnamespace as def from pg_extension`,
  function: `select p.oid::regprocedure::text as name,
               (case when p.prokind in ('f', 'p', 'w') then pg_get_functiondef(p.oid) else p.prokind::text end)
               || E'\\n-- owner ' || pg_get_userbyid(p.proowner) || E'\\n-- acl ' || ${acl('p.proacl')} as def
             from pg_proc p where ${userSchema('p.pronamespace')} and ${notFromExtension('pg_proc', 'p.oid')}`,
  relation: `select c.oid::regclass::text as name,
               c.relkind::text || ' owner ' || pg_get_userbyid(c.relowner) || ' rls ' || c.relrowsecurity || '/' || c.relforcerowsecurity
               || ' replica ' || c.relreplident::text || ' acl ' || ${acl('c.relacl')}
               || coalesce(' partition ' || pg_get_expr(c.relpartbound, c.oid), '') as def
             from pg_class c where ${userSchema('c.relnamespace')} and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f', 'c')
               and ${notFromExtension('pg_class', 'c.oid')} and ${notFromExtension('pg_type', 'c.reltype')}`,
  column: `select c.oid::regclass::text || '.' || a.attname as name, c.oid::regclass::text as owner,
             format_type(a.atttypid, a.atttypmod) || case when a.attnotnull then ' not null' else '' end
             || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
             || case when a.attgenerated <> '' then ' generated' else '' end || ' acl ' || ${acl('a.attacl')} as def
           from pg_attribute a join pg_class c on c.oid = a.attrelid
           left join pg_attrdef ad on ad.adrelid = a.attrelid and ad.adnum = a.attnum
           where ${userSchema('c.relnamespace')} and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c')
             and a.attnum > 0 and not a.attisdropped and ${notFromExtension('pg_class', 'c.oid')} and ${notFromExtension('pg_type', 'c.reltype')}`,
  view: `select c.oid::regclass::text as name, pg_get_viewdef(c.oid) as def
         from pg_class c where ${userSchema('c.relnamespace')} and c.relkind in ('v', 'm') and ${notFromExtension('pg_class', 'c.oid')}`,
  index: `select c.oid::regclass::text as name, i.indrelid::regclass::text as owner, pg_get_indexdef(c.oid) as def
          from pg_class c join pg_index i on i.indexrelid = c.oid where ${userSchema('c.relnamespace')} and c.relkind in ('i', 'I')
            and ${notFromExtension('pg_class', 'i.indrelid')}`,
  constraint: `select coalesce(r.oid::regclass::text, t.oid::regtype::text) || ' ' || co.conname as name,
                 coalesce(r.oid::regclass::text, t.oid::regtype::text) as owner, pg_get_constraintdef(co.oid) as def
               from pg_constraint co left join pg_class r on r.oid = co.conrelid left join pg_type t on t.oid = co.contypid
               where ${userSchema('co.connamespace')} and ${notFromExtension('pg_class', 'co.conrelid')}`,
  trigger: `select tg.tgrelid::regclass::text || ' ' || tg.tgname as name, tg.tgrelid::regclass::text as owner, pg_get_triggerdef(tg.oid) || ' enabled ' || tg.tgenabled::text as def
            from pg_trigger tg join pg_class c on c.oid = tg.tgrelid where not tg.tgisinternal and ${userSchema('c.relnamespace')}`,
  policy: `select pol.polrelid::regclass::text || ' ' || pol.polname as name, pol.polrelid::regclass::text as owner,
             pol.polcmd::text || case when pol.polpermissive then ' permissive' else ' restrictive' end
             || ' to ' || (select string_agg(n, ',' order by n) from (select case r when 0 then 'public' else pg_get_userbyid(r) end as n from unnest(pol.polroles) r) x)
             || coalesce(' using (' || pg_get_expr(pol.polqual, pol.polrelid) || ')', '')
             || coalesce(' with check (' || pg_get_expr(pol.polwithcheck, pol.polrelid) || ')', '') as def
           from pg_policy pol`,
  type: `select t.oid::regtype::text as name,
           t.typtype::text || ' owner ' || pg_get_userbyid(t.typowner) || ' acl ' || ${acl('t.typacl')}
           || coalesce(' labels ' || (select string_agg(e.enumlabel, ',' order by e.enumsortorder) from pg_enum e where e.enumtypid = t.oid), '')
           || case when t.typtype = 'd' then ' base ' || format_type(t.typbasetype, t.typtypmod) else '' end as def
         from pg_type t where ${userSchema('t.typnamespace')} and t.typtype in ('e', 'd', 'r', 'm', 'b') and t.typcategory <> 'A'
           and ${notFromExtension('pg_type', 't.oid')}`,
  'default privileges': `select pg_get_userbyid(d.defaclrole) || ' in ' || coalesce(d.defaclnamespace::regnamespace::text, 'all schemas') || ' on ' || d.defaclobjtype::text as name,
                           ${acl('d.defaclacl')} as def from pg_default_acl d`,
  comment: `select pg_describe_object(d.classoid, d.objoid, d.objsubid) as name, d.description as def
            from pg_description d where d.objoid >= 16384 and d.classoid <> 'pg_extension'::regclass
              and ${notFromExtension('pg_class', 'd.objoid')} and ${notFromExtension('pg_proc', 'd.objoid')}`, // FirstNormalObjectId: not the built-in objects' comments
  publication: `select p.pubname as name,
                  'insert ' || p.pubinsert || ' update ' || p.pubupdate || ' delete ' || p.pubdelete || ' truncate ' || p.pubtruncate
                  || ' all ' || p.puballtables || ' via root ' || p.pubviaroot
                  || ' tables ' || coalesce((select string_agg(pr.prrelid::regclass::text, ',' order by pr.prrelid::regclass::text) from pg_publication_rel pr where pr.prpubid = p.oid), '') as def
                from pg_publication p`,
  'event trigger': `select evtname as name, evtevent || ' ' || evtfoid::regproc || ' ' || evtenabled::text as def from pg_event_trigger`,
};

export async function catalog(sql: Sql): Promise<CatalogEntry[]> {
  const out: CatalogEntry[] = [];
  for (const [kind, query] of Object.entries(QUERIES)) {
    for (const row of await sql.unsafe(query)) {
      out.push({ kind, name: row.name as string, def: (row.def as string) ?? '', ...(row.owner ? { owner: row.owner as string } : {}) });
    }
  }
  return out;
}

/** What differs between two catalogs, by kind and name. */
export function diffCatalogs(left: CatalogEntry[], right: CatalogEntry[]): CatalogDifference[] {
  const key = (e: CatalogEntry) => `${e.kind}\u0000${e.name}`;
  const l = new Map(left.map((e) => [key(e), e]));
  const r = new Map(right.map((e) => [key(e), e]));
  const diffs: CatalogDifference[] = [];
  for (const [k, e] of l) {
    const other = r.get(k);
    if (!other) diffs.push({ kind: e.kind, name: e.name, owner: e.owner, only: 'left' });
    else if (other.def !== e.def) diffs.push({ kind: e.kind, name: e.name, owner: e.owner, left: e.def, right: other.def });
  }
  for (const [k, e] of r) if (!l.has(k)) diffs.push({ kind: e.kind, name: e.name, owner: e.owner, only: 'right' });
  return diffs.sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
}

/** One readable line per difference (plus the first differing line of a definition); the parts
 *  of a relation found on one side only (its columns, indexes, …) go without saying. */
export function describeDifferences(diffs: CatalogDifference[], labels: { left: string; right: string }): string[] {
  const only = new Set(diffs.filter((d) => d.only).map((d) => `${d.only} ${d.kind === 'relation' ? 'relation' : d.kind} ${d.name}`));
  const implied = (d: CatalogDifference) => {
    if (!d.only) return false;
    if (d.owner && only.has(`${d.only} relation ${d.owner}`)) return true;
    if (d.kind !== 'comment') return false;
    // pg_describe_object names: "function api.f(uuid)", "table app.t", "column c of table app.t", …
    const m = /^(?:column \S+ of )?(function|table|view|materialized view|sequence|type|schema) (.+)$/.exec(d.name);
    if (!m) return false;
    return only.has(`${d.only} ${m[1] === 'function' || m[1] === 'schema' ? m[1] : 'relation'} ${m[2]}`);
  };
  return diffs.filter((d) => !implied(d)).map((d) => {
    if (d.only) return `${d.kind} ${d.name}: only in ${d.only === 'left' ? labels.left : labels.right}`;
    const a = d.left!.split('\n');
    const b = d.right!.split('\n');
    const i = a.findIndex((line, n) => line !== b[n]);
    const at = i === -1 ? a.length : i;
    return `${d.kind} ${d.name} differs (line ${at + 1}):\n    ${labels.left}: ${a[at] ?? '(end)'}\n    ${labels.right}: ${b[at] ?? '(end)'}`;
  });
}
