// A minimal JSON reader for preprocess.json (objects, arrays, strings, numbers, true/false/null).
// LibTorch ships no JSON library and the contract is small, so a ~200-line parser keeps the
// engine free of extra dependencies. Errors throw JsonError with the byte offset.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace e2evision::json {

class JsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Value() = default;
  static Value parse(const std::string& text);

  Type type() const { return type_; }
  bool isNull() const { return type_ == Type::Null; }
  bool isNumber() const { return type_ == Type::Number; }
  bool isString() const { return type_ == Type::String; }
  bool isArray() const { return type_ == Type::Array; }
  bool isObject() const { return type_ == Type::Object; }
  bool isBool() const { return type_ == Type::Bool; }

  // Typed accessors throw JsonError naming `what` when the type is wrong.
  double number(const std::string& what) const;
  bool boolean(const std::string& what) const;
  const std::string& string(const std::string& what) const;
  const std::vector<Value>& array(const std::string& what) const;
  const std::map<std::string, Value>& object(const std::string& what) const;

  bool has(const std::string& key) const;
  // The member `key` of an object; throws JsonError "missing field" when absent.
  const Value& at(const std::string& key, const std::string& what) const;

 private:
  friend class Parser;
  Type type_ = Type::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Value> array_;
  std::map<std::string, Value> object_;
};

const char* typeName(Value::Type t);

}  // namespace e2evision::json
