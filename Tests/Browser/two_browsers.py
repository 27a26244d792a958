"""Two browsers on two nodes: WebRTC data channel through Switchboard, then one leaves.

Run through run.sh (inside a private network namespace). Screenshots go to
Tests/Browser/artifacts/. Prints "browser: N passed, N failed".
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

BIN = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(HERE, "artifacts")
ROOM = "browser-test"
REDIS_PORT, PORTS, PAGE_PORT, CLOSED_PORT = 16390, (18101, 18102), 18100, 18103
REDIS = ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

work = tempfile.mkdtemp(prefix="switchboard-browser-")
os.environ["TMPDIR"] = work  # Chromium's profiles and crash dumps land here and go with it
processes, drivers = [], []
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)


def wait_for(what, condition, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if condition():
                return True
        except Exception:
            pass
        time.sleep(0.1)
    return False


def start(args, log):
    processes.append(subprocess.Popen(args, stdout=open(os.path.join(work, log), "w"), stderr=subprocess.STDOUT))


def healthy(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
        return response.status == 200


def grant_media(driver, origin):
    # Without a media permission Chromium offers no 127.0.0.1 candidate and ICE never completes.
    driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": origin, "permissions": ["audioCapture", "videoCapture"]})


def browser(name):
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--allow-loopback-in-peer-connection", f"--user-data-dir={work}/profile-{name}",
                 "--window-size=900,600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    drivers.append(driver)
    return driver


def body(driver, key):
    return driver.execute_script(f"return document.body.dataset.{key}")


def messages(driver):
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]


def say(driver, text):
    box = driver.find_element(By.ID, "text")
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#send button").click()


try:
    os.makedirs(ARTIFACTS, exist_ok=True)
    start(REDIS + ["--dir", work], "redis.log")
    redis = processes[-1]
    # The page written to the article's client pattern, from an origin of its own.
    start([sys.executable, "-m", "http.server", str(PAGE_PORT), "--bind", "127.0.0.1", "--directory", HERE], "pages.log")
    time.sleep(0.3)
    env = dict(os.environ, SWITCHBOARD_TOKEN_SECRET="browser-test-secret-" + "x" * 20, SWITCHBOARD_LOG_LEVEL="warning")
    for index, port in enumerate(PORTS):
        processes.append(subprocess.Popen(
            [f"{BIN}/switchboard", "serve", "--port", str(port), "--redis", f"redis://127.0.0.1:{REDIS_PORT}",
             "--node-id", f"node-{'ab'[index]}"],
            env=env, stdout=open(os.path.join(work, f"node-{port}.log"), "w"), stderr=subprocess.STDOUT))
    check("both nodes ready", all(wait_for("ready", lambda p=p: healthy(p), 20) for p in PORTS))

    alice, bob = browser("alice"), browser("bob")
    for driver, port, name in ((alice, PORTS[0], "alice"), (bob, PORTS[1], "bob")):
        grant_media(driver, f"http://127.0.0.1:{port}")
        driver.get(f"http://127.0.0.1:{port}/{ROOM}?name={name}")

    check("alice's stream connected", wait_for("stream", lambda: body(alice, "stream") == "connected"))
    check("bob's stream connected", wait_for("stream", lambda: body(bob, "stream") == "connected"))
    check("alice has a data channel open to bob", wait_for("channel", lambda: body(alice, "openChannels") == "1"),
          f"peers={body(alice, 'peers')} open={body(alice, 'openChannels')}")
    check("bob has a data channel open to alice", wait_for("channel", lambda: body(bob, "openChannels") == "1"),
          f"peers={body(bob, 'peers')} open={body(bob, 'openChannels')}")

    say(alice, "hello from alice")
    say(bob, "hello from bob")
    check("bob received alice's message", wait_for("message", lambda: "alice: hello from alice" in messages(bob)),
          messages(bob))
    check("alice received bob's message", wait_for("message", lambda: "bob: hello from bob" in messages(alice)),
          messages(alice))
    alice.save_screenshot(os.path.join(ARTIFACTS, "alice.png"))
    bob.save_screenshot(os.path.join(ARTIFACTS, "bob.png"))

    bob.quit()
    drivers.remove(bob)
    check("alice sees bob gone", wait_for("gone", lambda: body(alice, "peers") == "0"), body(alice, "peers"))
    check("alice's page says so", wait_for("said", lambda: any("left" in m for m in messages(alice))), messages(alice))
    alice.save_screenshot(os.path.join(ARTIFACTS, "alice-after-bob-left.png"))

    # Redis goes down. Pages open meanwhile: two written to the article's client pattern (one
    # EventSource, one join on `connected`, no retries of their own), one on each node, and the
    # demo on node B in alice's room. Redis comes back empty; every page must end connected.
    redis.kill()
    redis.wait()
    carol, erin, dave = browser("carol"), browser("erin"), browser("dave")
    for driver, port, name in ((carol, PORTS[0], "carol"), (erin, PORTS[1], "erin")):
        grant_media(driver, f"http://127.0.0.1:{PAGE_PORT}")
        driver.get(f"http://127.0.0.1:{PAGE_PORT}/article_client.html?node=http://127.0.0.1:{port}&room=outage&name={name}")
    grant_media(dave, f"http://127.0.0.1:{PORTS[1]}")
    dave.get(f"http://127.0.0.1:{PORTS[1]}/{ROOM}?name=dave")
    check("pages opened while Redis is down have their EventSource open",
          wait_for("open", lambda: body(carol, "stream") == "open" and body(erin, "stream") == "open"),
          f"carol={body(carol, 'stream')} erin={body(erin, 'stream')}")
    time.sleep(3)
    check("no EventSource gave up while Redis was down",
          body(carol, "stream") == "open" and body(erin, "stream") == "open" and body(dave, "stream") != "closed",
          f"carol={body(carol, 'stream')} erin={body(erin, 'stream')} dave={body(dave, 'stream')}")
    start(REDIS + ["--dir", work], "redis-restarted.log")
    check("article-pattern pages on the two nodes connect a data channel after the outage",
          wait_for("channel", lambda: body(carol, "openChannels") == "1" and body(erin, "openChannels") == "1", 45),
          f"carol={body(carol, 'openChannels')} erin={body(erin, 'openChannels')}")
    check("the demo opened during the outage connects to alice", wait_for(
        "channel", lambda: body(dave, "openChannels") == "1" and body(alice, "openChannels") == "1", 45),
          f"dave={body(dave, 'openChannels')} alice={body(alice, 'openChannels')}")
    say(dave, "hello after the outage")
    check("alice received dave's message", wait_for("message", lambda: "dave: hello after the outage" in messages(alice)),
          messages(alice))

    # A node with --access off hands out no tokens: its demo page says so instead of failing silently.
    processes.append(subprocess.Popen(
        [f"{BIN}/switchboard", "serve", "--port", str(CLOSED_PORT), "--redis", f"redis://127.0.0.1:{REDIS_PORT}",
         "--node-id", "node-c", "--access", "off"],
        env=env, stdout=open(os.path.join(work, "node-closed.log"), "w"), stderr=subprocess.STDOUT))
    check("the node with access off is ready", wait_for("ready", lambda: healthy(CLOSED_PORT), 20))
    frank = browser("frank")
    frank.get(f"http://127.0.0.1:{CLOSED_PORT}/{ROOM}?name=frank")
    check("its demo page says why it cannot start",
          wait_for("said", lambda: any("access is off" in m for m in messages(frank))), messages(frank))
except Exception as error:  # a crash is a failure, not a silent pass
    check("browser test ran", False, repr(error))
finally:
    for driver in drivers:
        driver.quit()
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    if not all(results):
        for name in sorted(os.listdir(work)):
            if name.endswith(".log"):
                print(f"--- {name}\n" + open(os.path.join(work, name)).read()[-3000:])
    shutil.rmtree(work, ignore_errors=True)

passed = sum(results)
print(f"browser: {passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) and results else 1)
