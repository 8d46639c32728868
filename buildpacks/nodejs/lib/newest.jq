# The newest release version X.Y.Z in `.versions` (an npm packument's object, or an array of versions) that
# satisfies the node-semver range $range, or nothing. Ranges: what package.json `engines` use — `||` unions,
# space-separated comparators (= < <= > >= ~ ^ with full or partial versions, x/X/* wildcards, a leading v)
# and hyphen ranges `A - B`. Prerelease versions are never picked by a range (as npm does); an exact version
# that is listed, prerelease or not, is itself. Anything else stops with an error naming the range.
# Used by bin/build as: jq -r --arg range RANGE -f newest.jq < packument.json   (jq 1.6)

def bad($why):
  error("\"\($range)\" is not a version range this buildpack understands"
    + (if $why == "\"\($range)\"" then "" else " (\($why))" end));

# "20" -> [20,null,null], "20.x" -> [20,null,null], "*" or "" -> [null,null,null], "20.1.2" -> [20,1,2].
def partial:
  if test("^(([0-9]+|[xX*])(\\.([0-9]+|[xX*])(\\.([0-9]+|[xX*]))?)?)?$") | not then bad("\"\(.)\"")
  else
    split(".") | map(if . == "" or . == "x" or . == "X" or . == "*" then null else tonumber end)
    | [.[0], .[1], .[2]]
    # A wildcard makes everything after it a wildcard.
    | if .[0] == null then [null, null, null] elif .[1] == null then [.[0], null, null] else . end
  end;

def zero: map(. // 0);

# One comparator (such as "^20.1", ">=18", "22.x") as a list of [op, [major, minor, patch]] with op one of
# = < <= > >=, which must all hold.
def comparator:
  (capture("^(?<op><=|>=|<|>|=|~>|~|\\^)?v?(?<v>.*)$") // bad("\"\(.)\"")) as $c
  | ($c.v | partial) as $p
  | ($p | zero) as $z
  | ($c.op // "") as $op
  | if $p[0] == null then (if $op == "<" or $op == ">" then [["<", [0, 0, 0]]] else [] end)
    elif $op == "" or $op == "=" then
      if $p[1] == null then [[">=", $z], ["<", [$p[0] + 1, 0, 0]]]
      elif $p[2] == null then [[">=", $z], ["<", [$p[0], $p[1] + 1, 0]]]
      else [["=", $p]] end
    elif $op == "~" or $op == "~>" then
      if $p[1] == null then [[">=", $z], ["<", [$p[0] + 1, 0, 0]]]
      else [[">=", $z], ["<", [$p[0], $p[1] + 1, 0]]] end
    elif $op == "^" then
      if $p[0] > 0 or $p[1] == null then [[">=", $z], ["<", [$p[0] + 1, 0, 0]]]
      elif $p[1] > 0 or $p[2] == null then [[">=", $z], ["<", [0, $p[1] + 1, 0]]]
      else [[">=", $z], ["<", [0, 0, $p[2] + 1]]] end
    elif $op == ">=" then [[">=", $z]]
    elif $op == "<" then [["<", $z]]
    elif $op == ">" then
      if $p[1] == null then [[">=", [$p[0] + 1, 0, 0]]]
      elif $p[2] == null then [[">=", [$p[0], $p[1] + 1, 0]]]
      else [[">", $p]] end
    else # <=
      if $p[1] == null then [["<", [$p[0] + 1, 0, 0]]]
      elif $p[2] == null then [["<", [$p[0], $p[1] + 1, 0]]]
      else [["<=", $p]] end
    end;

# A hyphen range's upper end: a partial version means "below the next one".
def upper:
  if .[0] == null then []
  elif .[1] == null then [["<", [.[0] + 1, 0, 0]]]
  elif .[2] == null then [["<", [.[0], .[1] + 1, 0]]]
  else [["<=", .]] end;

# One ||-alternative as a list of constraints.
def alternative:
  gsub("^\\s+|\\s+$"; "")
  | if test("^\\S+\\s+-\\s+\\S+$") then
      capture("^v?(?<lo>\\S+)\\s+-\\s+v?(?<hi>\\S+)$")
      | (.lo | partial) as $lo
      | (if $lo[0] == null then [] else [[">=", ($lo | zero)]] end) + (.hi | partial | upper)
    else
      # "> = 18" and ">= 18" are ">=18".
      gsub("(?<op>[<>=~^]+)\\s+"; "\(.op)") | [splits("\\s+") | select(. != "") | comparator] | add // []
    end;

def compare($a; $b):
  if $a[0] != $b[0] then $a[0] - $b[0] elif $a[1] != $b[1] then $a[1] - $b[1] else $a[2] - $b[2] end;

def holds($v):
  . as [$op, $t]
  | compare($v; $t) as $c
  | if $op == ">=" then $c >= 0 elif $op == ">" then $c > 0 elif $op == "<" then $c < 0
    elif $op == "<=" then $c <= 0 else $c == 0 end;

(.versions | if type == "object" then keys elif type == "array" then . else [] end) as $listed
| if ($range | test("[\\r\\n\\t]")) then bad("a control character") else . end
| if any($listed[]; . == $range or . == ($range | ltrimstr("v"))) then $range | ltrimstr("v")
  else
    [$range | splits("\\|\\|") | alternative] as $alternatives
    | [$listed[] | select(test("^[0-9]+\\.[0-9]+\\.[0-9]+$")) | split(".") | map(tonumber)
       | . as $v | select(any($alternatives[]; all(.[]; holds($v))))]
    | sort | last // empty | map(tostring) | join(".")
  end
