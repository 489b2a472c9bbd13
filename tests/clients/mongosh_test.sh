#!/usr/bin/env bash
# mongosh (npm, pinned in node/package.json) through tollgate's MongoDB listener, as issue 15's
# "done when" says: `db.orders.findOne()` works from the demo's env file, `db.secrets.find()` is
# refused naming the rule, `db.customers.findOne().email` is masked; and the writer's writes,
# the trusted agent's transaction, a wrong token, TLS.
MONGOSH="$(dirname "$0")/node/node_modules/.bin/mongosh"
TITLE="mongosh $("$MONGOSH" --version 2>/dev/null)"
. "$(dirname "$0")/lib.sh"

sh() { "$MONGOSH" "$1" --quiet --norc --eval "$2" 2>&1; }
# The three checks of the issue use the env file's URL exactly; the others allow a slower server
# selection than mongosh's 2 s default (a loaded CI machine).
slow() { "$MONGOSH" "$1&serverSelectionTimeoutMS=15000" --quiet --norc --eval "$2" 2>&1; }
A=$TOLLGATE_MONGO_ANALYST_URL
RULE='tollgate: .*\(rule: [^)]+\)'

out=$(sh "$A" 'printjson(db.orders.findOne())')
expect 'db.orders.findOne()' "$out" 'customer_id' 'amount'
out=$(sh "$A" 'db.secrets.find()')
expect 'db.secrets.find() refused naming the rule' "$out" "MongoServerError.*$RULE" 'no rule allows find on shop.secrets \(rule: default-deny\)'
out=$(sh "$A" 'print(db.customers.findOne().email)')
expect 'db.customers.findOne().email masked' "$out" "^$EMAIL_MASK\$"
expect_not 'no clear email' "$out" '^[a-z0-9._]+@example\.'
out=$(slow "$A" 'print(db.orders.countDocuments({})); print(db.orders.find().toArray().length); db.orders.insertOne({_id: -1})')
expect 'count, the 1000-document cap, writes refused' "$out" '^[0-9]{4,}$' '^1000$' "insert on shop.orders.*$RULE|$RULE"
out=$(slow "$A" 'db.customers.aggregate([{$group: {_id: "$region", n: {$sum: 1}}}]).toArray().length')
expect 'aggregation by an unmasked field' "$out" '^[0-9]+$'
out=$(slow "$A" 'db.getSiblingDB("admin").runCommand({createUser: "x", pwd: "y", roles: []})')
expect 'createUser refused' "$out" 'builtin: admin-command'

out=$(slow "$TOLLGATE_MONGO_WRITER_URL" 'db.orders.insertOne({_id: 940000, amount: 1}); db.orders.updateOne({_id: 940000}, {$set: {amount: 2}}); print(db.orders.findOne({_id: 940000}).amount); print(db.orders.deleteOne({_id: 940000}).deletedCount)')
expect 'writer writes orders' "$out" '^2$' '^1$'

out=$(slow "$TOLLGATE_MONGO_TRUSTED_URL" 's = db.getMongo().startSession(); s.startTransaction(); s.getDatabase("shop").orders.insertOne({_id: 950000}); s.commitTransaction(); print(db.orders.countDocuments({_id: 950000})); db.orders.deleteOne({_id: 950000})')
expect 'trusted transaction' "$out" '^1$'

bad=$(sed 's#//analyst:[^@]*@#//analyst:tg_wrong@#' <<<"$A")
out=$(slow "$bad" 'db.orders.findOne()')
expect 'wrong token' "$out" 'Authentication failed'

out=$(slow "$TOLLGATE_MONGO_ANALYST_TLS_URL" 'print(String(db.orders.findOne({_id: 7})._id))')
expect 'TLS listener' "$out" '^7$'
finish
