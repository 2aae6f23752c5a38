#pragma once
// Each enum's names, defined once: a table of {value, name} rows beside the enum. Parsing,
// printing, the command line's choices and its help text all read that one table, so a
// new value is one row.
#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace ad {

template <class E, std::size_t N>
using NameTable = std::array<std::pair<E, const char*>, N>;

/// The value's name ("?" for a value not in the table).
template <class E, std::size_t N>
const char* name_in(const NameTable<E, N>& table, E value) {
  for (const auto& row : table)
    if (row.first == value) return row.second;
  return "?";
}

/// Every name, in the table's order (a command line's choices).
template <class E, std::size_t N>
std::vector<std::string> names_of(const NameTable<E, N>& table) {
  std::vector<std::string> out;
  for (const auto& row : table) out.emplace_back(row.second);
  return out;
}

/// "a, b or c".
template <class E, std::size_t N>
std::string choices_of(const NameTable<E, N>& table) {
  std::string s;
  for (std::size_t i = 0; i < N; ++i) s += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(table[i].second);
  return s;
}

/// The value named `name`; std::invalid_argument "unknown <what> '<name>' (expected a, b or c)" otherwise.
template <class E, std::size_t N>
E value_named(const NameTable<E, N>& table, const std::string& name, const char* what) {
  for (const auto& row : table)
    if (name == row.second) return row.first;
  throw std::invalid_argument(fmt::format("unknown {} '{}' (expected {})", what, name, choices_of(table)));
}

}  // namespace ad
