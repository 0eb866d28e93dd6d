#pragma once
// Keys and values on their way into PostgreSQL: which bytes a text column can hold, and the
// COPY text-format and bytea encodings of the rest. Pure functions.

#include <string>
#include <string_view>

namespace etcd_sync {

/// True when `bytes` can be stored in a PostgreSQL text column: valid UTF-8 (no overlong forms, no
/// surrogates, nothing above U+10FFFF) and no NUL byte (PostgreSQL text cannot hold NUL).
bool is_text(std::string_view bytes);

/// Appends `field` to a COPY text-format line, escaping backslash, tab, newline and carriage return
/// (PostgreSQL docs, COPY "Text Format"). Does not add a delimiter.
void append_copy_text(std::string& line, std::string_view field);
/// Raw bytes as bytea's hex input form ("\x0a1b..."; PostgreSQL docs, 8.4.1 "bytea Hex Format").
std::string bytea_hex(std::string_view bytes);
/// Appends raw bytes as a bytea hex literal in COPY text format ("\\x0a1b...").
void append_copy_bytea(std::string& line, std::string_view bytes);

}  // namespace etcd_sync
