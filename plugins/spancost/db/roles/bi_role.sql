-- The read-only role for BI tools: it reads the marts schema and nothing else.
-- Applied by `spancost db init` (it needs CREATEROLE, so the loaders never run it).
-- NOLOGIN: log in as a user that is a member of it (create role alice login
-- password '...' in role spancost_bi), or give it a login yourself.
do $$
begin
    if not exists (select from pg_roles where rolname = 'spancost_bi') then
        create role spancost_bi nologin;
    end if;
exception when duplicate_object then
    null;  -- created by a concurrent init
end
$$;

create schema if not exists marts;
grant usage on schema marts to spancost_bi;
grant select on all tables in schema marts to spancost_bi;
-- Every build swaps in new tables; they are readable as soon as they exist
-- (for the role that runs dbt, which is the role running this).
alter default privileges in schema marts grant select on tables to spancost_bi;
