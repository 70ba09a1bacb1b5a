SELECT 1;  -- reserved; filled by its change
