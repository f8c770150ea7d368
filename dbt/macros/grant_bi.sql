{#-
    Post-hook of every mart: the read-only BI role `spancost_bi` (created by
    `spancost db init`) can read the table dbt just swapped in. A no-op where the
    role does not exist, so a build never needs CREATEROLE or an init first.
-#}
{% macro spancost_grant_bi(relation) -%}
    do $$
    begin
        if exists (select from pg_roles where rolname = 'spancost_bi') then
            execute 'grant select on {{ relation }} to spancost_bi';
        end if;
    end
    $$
{%- endmacro %}
