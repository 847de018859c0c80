// Drives a running Squall with the official OpenWhisk JavaScript client (npm "openwhisk").
// Prints one JSON line per step; exits non-zero on the first failure.
const openwhisk = require("openwhisk");
const assert = require("assert");

const ow = openwhisk({ apihost: process.env.APIHOST, api_key: process.env.AUTH, namespace: "_" });
const name = "jsclient-hello-" + Date.now();
const code = [
  "def main(args):",
  "    print('hello from', args.get('name', 'nobody'))",
  "    return {'greeting': 'Hello ' + args.get('name', 'stranger')}",
].join("\n");

function step(label, data) {
  console.log(JSON.stringify({ step: label, data }));
}

async function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function pollActivation(id) {
  for (let i = 0; i < 100; i++) {
    try {
      return await ow.activations.get({ name: id });
    } catch (err) {
      if (err.statusCode !== 404) throw err;
      await sleep(100);
    }
  }
  throw new Error("activation " + id + " never appeared");
}

async function main() {
  const created = await ow.actions.create({ name, action: code, kind: "python:3" });
  assert.strictEqual(created.name, name);
  assert.strictEqual(created.version, "0.0.1");
  step("create", created.name);

  const got = await ow.actions.get({ name });
  assert.strictEqual(got.exec.kind, "python:3");
  assert.ok(got.exec.code.includes("def main"));
  step("get", got.exec.kind);

  const list = await ow.actions.list();
  assert.ok(list.some((a) => a.name === name), "created action is listed");
  step("list", list.length);

  const result = await ow.actions.invoke({ name, params: { name: "Squall" }, blocking: true, result: true });
  assert.deepStrictEqual(result, { greeting: "Hello Squall" });
  step("invoke-result", result);

  const accepted = await ow.actions.invoke({ name, params: { name: "async" } });
  assert.match(accepted.activationId, /^[0-9a-f]{32}$/);
  step("invoke-async", accepted.activationId);

  const activation = await pollActivation(accepted.activationId);
  assert.strictEqual(activation.response.success, true);
  assert.deepStrictEqual(activation.response.result, { greeting: "Hello async" });
  step("activation", activation.activationId);

  const logs = await ow.activations.logs({ name: accepted.activationId });
  assert.ok(logs.logs.some((l) => l.includes("stdout: hello from async")), JSON.stringify(logs));
  step("logs", logs.logs);

  const activations = await ow.activations.list({ name });
  assert.ok(activations.some((a) => a.activationId === accepted.activationId));
  step("activation-list", activations.length);

  const triggerName = name + "-trigger";
  const ruleName = name + "-rule";
  const trigger = await ow.triggers.create({
    name: triggerName,
    trigger: { parameters: [{ key: "name", value: "trigger" }] },
  });
  assert.strictEqual(trigger.name, triggerName);
  const rule = await ow.rules.create({ name: ruleName, trigger: triggerName, action: name });
  assert.strictEqual(rule.status, "active");
  assert.deepStrictEqual(rule.action, { path: "guest", name });
  step("trigger-rule", rule.name);

  const fired = await ow.triggers.invoke({ name: triggerName, params: { extra: 1 } });
  assert.match(fired.activationId, /^[0-9a-f]{32}$/);
  const triggerActivation = await pollActivation(fired.activationId);
  const entry = JSON.parse(triggerActivation.logs[0]);
  assert.strictEqual(entry.success, true, JSON.stringify(entry));
  const ruled = await pollActivation(entry.activationId);
  assert.strictEqual(ruled.cause, fired.activationId);
  assert.deepStrictEqual(ruled.response.result, { greeting: "Hello trigger" });
  step("fire", fired.activationId);

  // The alarms feed through the client's feeds API: a trigger that fires every second.
  const feed = "/whisk.system/alarms/alarm";
  const feedTrigger = `/guest/${triggerName}`;
  await ow.feeds.create({ name: feed, trigger: feedTrigger, params: { cron: "* * * * * *" } });
  const feedInfo = await ow.feeds.get({ name: feed, trigger: feedTrigger });
  assert.strictEqual(feedInfo.response.result.config.cron, "* * * * * *");
  let alarmed = [];
  for (let i = 0; i < 50 && alarmed.length === 0; i++) {
    await sleep(100);
    const recent = await ow.activations.list({ name: triggerName, docs: true });
    alarmed = recent.filter((a) => a.activationId !== fired.activationId);
  }
  assert.ok(alarmed.length > 0, "the alarm fired the trigger");
  await ow.feeds.delete({ name: feed, trigger: feedTrigger });
  step("feed", alarmed[0].activationId);

  await ow.rules.disable({ name: ruleName });
  assert.strictEqual((await ow.rules.get({ name: ruleName })).status, "inactive");
  await ow.rules.enable({ name: ruleName });
  assert.strictEqual((await ow.rules.get({ name: ruleName })).status, "active");
  await ow.rules.delete({ name: ruleName });
  await ow.triggers.delete({ name: triggerName });
  step("rule-toggle-delete", ruleName);

  // Packages, a sequence across them, and a web action called over plain HTTP.
  const pkg = name + "-pkg";
  const createdPkg = await ow.packages.create({
    name: pkg,
    package: { parameters: [{ key: "name", value: "package" }] },
  });
  assert.strictEqual(createdPkg.name, pkg);
  await ow.actions.create({ name: `${pkg}/hello`, action: code, kind: "python:3" });
  const gotPkg = await ow.packages.get({ name: pkg });
  assert.deepStrictEqual(gotPkg.actions.map((a) => a.name), ["hello"]);
  const inPkg = await ow.actions.invoke({ name: `${pkg}/hello`, blocking: true, result: true });
  assert.deepStrictEqual(inPkg, { greeting: "Hello package" });
  assert.ok((await ow.packages.list()).some((p) => p.name === pkg));
  step("package", gotPkg.name);

  const seq = name + "-seq";
  await ow.actions.create({ name: seq, sequence: [`/_/${pkg}/hello`, `/_/${name}`] });
  const seqRecord = await ow.actions.invoke({ name: seq, blocking: true });
  assert.deepStrictEqual(seqRecord.response.result, { greeting: "Hello stranger" });
  assert.strictEqual(seqRecord.logs.length, 2);
  step("sequence", seqRecord.activationId);

  const web = name + "-web";
  await ow.actions.create({
    name: web,
    action: "def main(args):\n    return {'body': 'hi ' + args.get('who', '?')}\n",
    kind: "python:3",
    annotations: { "web-export": true },
  });
  const page = await fetch(`${process.env.APIHOST}/api/v1/web/guest/default/${web}.http?who=js`);
  assert.strictEqual(page.status, 200);
  assert.strictEqual(await page.text(), "hi js");
  step("web", page.headers.get("x-openwhisk-activation-id"));

  await ow.actions.delete({ name: seq });
  await ow.actions.delete({ name: web });
  await ow.packages.delete({ name: pkg }).then(
    () => assert.fail("a package with actions is deleted only with force"),
    (err) => assert.strictEqual(err.statusCode, 409),
  );
  await ow.actions.delete({ name: `${pkg}/hello` });
  await ow.packages.delete({ name: pkg });

  await ow.actions.delete({ name });
  try {
    await ow.actions.get({ name });
    throw new Error("deleted action is still there");
  } catch (err) {
    assert.strictEqual(err.statusCode, 404);
  }
  step("delete", name);
}

main().then(
  () => step("done", true),
  (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
