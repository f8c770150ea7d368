"""The dbt project run (``dbt build``) and the report read back from the marts."""
