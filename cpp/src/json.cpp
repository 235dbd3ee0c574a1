#include "json.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

namespace e2evision::json {

const char* typeName(Value::Type t) {
  switch (t) {
    case Value::Type::Null: return "null";
    case Value::Type::Bool: return "a boolean";
    case Value::Type::Number: return "a number";
    case Value::Type::String: return "a string";
    case Value::Type::Array: return "an array";
    case Value::Type::Object: return "an object";
  }
  return "?";
}

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Value parseDocument() {
    Value v = parseValue(0);
    skipSpace();
    if (pos_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& msg) const {
    std::ostringstream os;
    os << "invalid JSON at byte " << pos_ << ": " << msg;
    throw JsonError(os.str());
  }

  void skipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }

  char peek() {
    skipSpace();
    if (pos_ >= s_.size()) fail("unexpected end of input");
    return s_[pos_];
  }

  void expectWord(const char* word) {
    for (const char* c = word; *c; ++c, ++pos_)
      if (pos_ >= s_.size() || s_[pos_] != *c) fail(std::string("expected '") + word + "'");
  }

  Value parseValue(int depth) {
    if (depth > 64) fail("nesting deeper than 64 levels");
    Value v;
    char c = peek();
    if (c == '{') {
      v.type_ = Value::Type::Object;
      ++pos_;
      if (peek() == '}') { ++pos_; return v; }
      while (true) {
        if (peek() != '"') fail("expected a string key");
        std::string key = parseString();
        if (peek() != ':') fail("expected ':'");
        ++pos_;
        v.object_[key] = parseValue(depth + 1);
        char d = peek();
        ++pos_;
        if (d == '}') break;
        if (d != ',') fail("expected ',' or '}'");
      }
    } else if (c == '[') {
      v.type_ = Value::Type::Array;
      ++pos_;
      if (peek() == ']') { ++pos_; return v; }
      while (true) {
        v.array_.push_back(parseValue(depth + 1));
        char d = peek();
        ++pos_;
        if (d == ']') break;
        if (d != ',') fail("expected ',' or ']'");
      }
    } else if (c == '"') {
      v.type_ = Value::Type::String;
      v.string_ = parseString();
    } else if (c == 't') {
      expectWord("true");
      v.type_ = Value::Type::Bool;
      v.bool_ = true;
    } else if (c == 'f') {
      expectWord("false");
      v.type_ = Value::Type::Bool;
    } else if (c == 'n') {
      expectWord("null");
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.type_ = Value::Type::Number;
      v.number_ = parseNumber();
    } else if (c == 'N' || c == 'I') {
      fail("NaN and Infinity are not JSON numbers");
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  double parseNumber() {
    size_t start = pos_;
    if (s_[pos_] == '-') ++pos_;
    auto digits = [&] {
      size_t d = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == d) fail("malformed number");
    };
    digits();
    if (pos_ < s_.size() && s_[pos_] == '.') { ++pos_; digits(); }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      digits();
    }
    std::string token = s_.substr(start, pos_ - start);
    char* end = nullptr;
    double x = std::strtod(token.c_str(), &end);
    if (end != token.c_str() + token.size() || !std::isfinite(x)) fail("malformed number '" + token + "'");
    return x;
  }

  static void appendUtf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned cp = 0;
    for (int i = 0; i < 4; ++i) {
      char h = s_[pos_++];
      cp <<= 4;
      if (h >= '0' && h <= '9') cp |= h - '0';
      else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
      else fail("bad \\u escape");
    }
    return cp;
  }

  std::string parseString() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (pos_ >= s_.size()) fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && pos_ + 6 <= s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u') {
            pos_ += 2;
            unsigned lo = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          appendUtf8(out, cp);
          break;
        }
        default: fail(std::string("bad escape '\\") + e + "'");
      }
    }
  }
};

Value Value::parse(const std::string& text) { return Parser(text).parseDocument(); }

static std::string wrongType(const std::string& what, const char* want, Value::Type got) {
  return what + " must be " + want + ", got " + typeName(got);
}

double Value::number(const std::string& what) const {
  if (type_ != Type::Number) throw JsonError(wrongType(what, "a number", type_));
  return number_;
}
bool Value::boolean(const std::string& what) const {
  if (type_ != Type::Bool) throw JsonError(wrongType(what, "a boolean", type_));
  return bool_;
}
const std::string& Value::string(const std::string& what) const {
  if (type_ != Type::String) throw JsonError(wrongType(what, "a string", type_));
  return string_;
}
const std::vector<Value>& Value::array(const std::string& what) const {
  if (type_ != Type::Array) throw JsonError(wrongType(what, "an array", type_));
  return array_;
}
const std::map<std::string, Value>& Value::object(const std::string& what) const {
  if (type_ != Type::Object) throw JsonError(wrongType(what, "an object", type_));
  return object_;
}
bool Value::has(const std::string& key) const { return type_ == Type::Object && object_.count(key) > 0; }
const Value& Value::at(const std::string& key, const std::string& what) const {
  const auto& obj = object(what);
  auto it = obj.find(key);
  if (it == obj.end()) throw JsonError("missing field '" + (what.empty() ? key : what + "." + key) + "'");
  return it->second;
}

}  // namespace e2evision::json
