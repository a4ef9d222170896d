// The family's page: polls /f/<token>/state every 2 s (bounded) and renders it in Chinese or English.
"use strict";
(function () {
  var POLL_MS = 2000;
  var MAX_POLLS = 1800;          // one hour of live updates, then a button to resume
  var AFTER_CLOSE_POLLS = 300;   // ten more minutes once the incident is closed (late codes, revokes)
  var LANG_KEY = "voip-sos-family-lang";

  var T = {
    en: {
      title: "SOS alarm", loading: "Loading…", test: "TEST — not a real emergency",
      access: "Access for responders", door_code: "Door code", parking_pass: "Parking pass",
      not_yet: "Not known yet", revoke: "Revoke door codes", reached: "Who has been reached",
      nobody_yet: "Nobody yet", timeline: "What has happened",
      noscript: "This page needs JavaScript to show the alarm's progress.",
      confirm_title: "Revoke the door codes?",
      confirm_text: "The temporary door codes stop working at once. Responders who have not arrived yet will need another way in. Your own permanent codes are not touched.",
      keep: "Keep the codes", revoke_now: "Revoke now", lang_button: "中文",
      title_for: "SOS alarm: {name}",
      s_calling: "Calling for help…", s_calling_sub: "Nobody has confirmed the alarm yet.",
      s_confirmed_centre: "The emergency centre confirmed the alarm",
      s_confirmed_contact: "A family contact confirmed the alarm",
      s_confirmed_contact_sub: "The emergency centre has not confirmed yet.",
      s_nobody_reached: "Nobody could be reached",
      s_nobody_reached_sub: "Every call was tried and nobody confirmed. Please call for help yourself.",
      s_closed: "The alarm is over",
      r_reached: "Everyone needed was reached.", r_false_alarm: "It was cancelled at the TV box (false alarm).",
      r_unreached: "Nobody confirmed.", r_superseded_by_real_sos: "A real alarm replaced this test.",
      s_gone: "This link does not exist or has expired.",
      centre: "Emergency centre", test_line: "Test line", contact: "Contact {n}", you: "you",
      opened: "The SOS button was pressed", calling: "Calling {who}", ringing: "{who} is ringing",
      answered: "{who} answered", "call_ended.confirmed": "{who} confirmed (pressed 1)",
      "call_ended.unconfirmed": "{who} hung up without confirming", "call_ended.busy": "{who} was busy",
      "call_ended.no_answer": "{who} did not answer", "call_ended.failed": "The call to {who} failed",
      "call_ended.cancelled": "The call to {who} was stopped", "call_ended.ended": "The call to {who} ended",
      callback: "{who} called back and confirmed",
      "sms.emergency": "Text message to {who}", "sms.codes": "Door code text to {who}",
      "sms.false_alarm": "False-alarm text to {who}", sms_failed: " — not delivered to the network",
      door_code_step: "The door code arrived", door_code_expired_step: "The temporary door code expired", parking_pass_step: "The parking pass arrived",
      cancelled: "The alarm was cancelled at the TV box", closed: "The alarm was closed",
      revoke_requested: "{who} asked to revoke the door codes",
      revoked: "The door codes were revoked", revoke_failed: "Revoking the door codes failed",
      rv_pending: "Revoking… waiting for the lock to confirm.",
      rv_done: "Door codes revoked at {time}: the lock confirmed it.",
      rv_slots: " Cleared slot(s): {slots}.",
      rv_failed: "Revoking did not complete: {error}. The codes may still work; try again.",
      rv_forbidden: "This page is out of date. Reload it and try again.",
      revoked_code: "revoked", valid_until: "valid until {time}",
      live: "Updated {time} · live", paused: "Live updates paused.", resume: "Resume",
      offline: "Cannot reach the server — retrying…", unknown_error: "no answer from the home hub",
      clips: "Video from before the alarm", clip_recent: "the last {len} before the alarm",
      clip_full: "{len} before the alarm", clip_gaps: "{n} stretch(es) without video",
      clip_full_ready: "The full clip is ready — play it", sec: "{n} s", min_sec: "{m} min {n} s",
      clip_step: "Video from camera {camera} arrived ({len})",
      clip_deleted_step: "Video from camera {camera} was deleted (storage period over)"
    },
    zh: {
      title: "SOS 紧急呼叫", loading: "正在加载…", test: "测试 — 不是真实紧急情况",
      access: "救援人员通行", door_code: "门锁临时密码", parking_pass: "停车通行码",
      not_yet: "尚未获得", revoke: "撤销门锁密码", reached: "已联系上",
      nobody_yet: "暂无", timeline: "经过",
      noscript: "本页需要启用 JavaScript 才能显示呼叫进展。",
      confirm_title: "撤销门锁临时密码？",
      confirm_text: "临时密码将立即失效。尚未到达的救援人员需要其他方式进门。您自己的固定密码不受影响。",
      keep: "保留密码", revoke_now: "立即撤销", lang_button: "EN",
      title_for: "SOS 紧急呼叫：{name}",
      s_calling: "正在呼叫救援…", s_calling_sub: "还没有人确认收到警报。",
      s_confirmed_centre: "紧急中心已确认收到警报",
      s_confirmed_contact: "家人已确认收到警报",
      s_confirmed_contact_sub: "紧急中心尚未确认。",
      s_nobody_reached: "未能联系上任何人",
      s_nobody_reached_sub: "所有电话都已拨打，无人确认。请您立即自行求助。",
      s_closed: "本次警报已结束",
      r_reached: "需要联系的人都已联系上。", r_false_alarm: "已在电视机顶盒上取消（误报）。",
      r_unreached: "无人确认。", r_superseded_by_real_sos: "真实警报已取代本次测试。",
      s_gone: "此链接不存在或已过期。",
      centre: "紧急中心", test_line: "测试线路", contact: "联系人 {n}", you: "您",
      opened: "SOS 按键被按下", calling: "正在呼叫{who}", ringing: "{who}电话振铃中",
      answered: "{who}已接听", "call_ended.confirmed": "{who}已确认（按了 1）",
      "call_ended.unconfirmed": "{who}未确认就挂断了", "call_ended.busy": "{who}占线",
      "call_ended.no_answer": "{who}无人接听", "call_ended.failed": "呼叫{who}失败",
      "call_ended.cancelled": "已停止呼叫{who}", "call_ended.ended": "与{who}的通话已结束",
      callback: "{who}回电并已确认",
      "sms.emergency": "已发短信给{who}", "sms.codes": "已发门锁密码短信给{who}",
      "sms.false_alarm": "已发误报短信给{who}", sms_failed: "（未能发出）",
      door_code_step: "已收到门锁临时密码", door_code_expired_step: "门锁临时密码已过期", parking_pass_step: "已收到停车通行码",
      cancelled: "警报已在机顶盒上取消", closed: "警报已结束",
      revoke_requested: "{who}要求撤销门锁密码",
      revoked: "门锁密码已撤销", revoke_failed: "撤销门锁密码失败",
      rv_pending: "正在撤销…等待门锁确认。",
      rv_done: "门锁密码已于 {time} 撤销，门锁已确认。",
      rv_slots: "已清除槽位：{slots}。",
      rv_failed: "撤销未完成：{error}。密码可能仍然有效，请重试。",
      rv_forbidden: "页面已过期，请刷新后重试。",
      revoked_code: "已撤销", valid_until: "有效期至 {time}",
      live: "更新于 {time} · 实时", paused: "实时更新已暂停。", resume: "继续",
      offline: "无法连接服务器，正在重试…", unknown_error: "家庭网关没有应答",
      clips: "报警前的监控视频", clip_recent: "报警前最后 {len}", clip_full: "报警前 {len}",
      clip_gaps: "其中 {n} 段没有画面", clip_full_ready: "完整视频已就绪，点击播放",
      sec: "{n} 秒", min_sec: "{m} 分 {n} 秒",
      clip_step: "已收到摄像头 {camera} 的视频（{len}）",
      clip_deleted_step: "摄像头 {camera} 的视频已过保存期限并删除"
    }
  };

  var token = location.pathname.split("/")[2] || "";
  var base = "/f/" + encodeURIComponent(token);
  var chosen = null;
  try { chosen = localStorage.getItem(LANG_KEY); } catch (e) { chosen = null; }
  var lang = chosen || ((navigator.language || "").toLowerCase().indexOf("zh") === 0 ? "zh" : "en");
  var state = null, etag = null, polls = 0, closedPolls = 0, timer = null, lastOk = null, failing = false;
  var revokeNote = null;  // a result the POST returned, until the state shows it too
  var players = {};       // camera -> {fig, video, caption, button, id}: kept across renders so playback continues

  function $(id) { return document.getElementById(id); }
  function t(key, params) {
    var s = (T[lang] && T[lang][key]) || T.en[key] || key;
    if (params) { Object.keys(params).forEach(function (k) { s = s.split("{" + k + "}").join(params[k]); }); }
    return s;
  }
  function reason(r) {
    // A close reason this page has no words for is left out rather than shown as a code.
    return r && (T[lang]["r_" + r] || T.en["r_" + r]) ? t("r_" + r) : "";
  }
  function clock(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    return d.toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }
  function text(el, s) { el.textContent = s; }
  function who(w, withNumber) {
    if (!w) { return ""; }
    var name = w.role === "centre" ? t("centre") : w.role === "test" ? t("test_line") : t("contact", { n: (w.index || 0) + 1 });
    var extra = [];
    if (w.you) { extra.push(t("you")); }
    if (w.number && withNumber) { extra.push(w.number); }
    if (!extra.length) { return name; }
    return lang === "zh" ? name + "（" + extra.join("，") + "）" : name + " (" + extra.join(", ") + ")";
  }

  function applyStatic() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    var nodes = document.querySelectorAll("[data-i18n]");
    for (var i = 0; i < nodes.length; i++) { text(nodes[i], t(nodes[i].getAttribute("data-i18n"))); }
    text($("lang"), t("lang_button"));
  }

  function length(seconds) {
    var s = Math.round(seconds || 0);
    return s < 90 ? t("sec", { n: s }) : t("min_sec", { m: Math.floor(s / 60), n: s % 60 });
  }

  function clipCaption(c) {
    var text = c.camera + " · " + t(c.part === "recent" ? "clip_recent" : "clip_full", { len: length(c.duration_s) });
    if (c.gaps) { text += " · " + t("clip_gaps", { n: c.gaps }); }
    return text;
  }

  function renderClips() {
    // One player per camera: the full clip once it is there, else the recent one. A player that is
    // playing is never switched under the viewer; a button offers the full clip instead.
    var best = {};
    (state.clips || []).forEach(function (c) {
      if (!best[c.camera] || c.part === "full") { best[c.camera] = c; }
    });
    var cameras = Object.keys(best).sort();
    $("clips-card").hidden = !cameras.length;
    cameras.forEach(function (cam) {
      var c = best[cam], p = players[cam];
      if (!p) {
        p = { fig: document.createElement("figure"), video: document.createElement("video"),
              caption: document.createElement("figcaption"), button: document.createElement("button"), id: null };
        p.video.controls = true; p.video.preload = "metadata"; p.video.setAttribute("playsinline", "");
        p.video.setAttribute("data-camera", cam);
        p.button.type = "button"; p.button.hidden = true;
        p.button.addEventListener("click", function () { show(p, p.pending); });
        p.fig.appendChild(p.video); p.fig.appendChild(p.caption); p.fig.appendChild(p.button);
        $("clips").appendChild(p.fig);
        players[cam] = p;
      }
      if (p.id !== c.id) {
        var busy = p.id !== null && !p.video.paused && !p.video.ended;
        if (busy) { p.pending = c; p.button.hidden = false; text(p.button, t("clip_full_ready")); }
        else { show(p, c); }
      }
      if (p.shown) { text(p.caption, clipCaption(p.shown)); }
    });
  }

  function show(p, c) {
    p.id = c.id; p.shown = c; p.pending = null; p.button.hidden = true;
    p.video.src = base + "/clip/" + c.id;
    p.video.setAttribute("data-part", c.part);
    text(p.caption, clipCaption(c));
  }

  function stepText(s) {
    // The masked number once, where the call is placed; later steps name the party only.
    var w = who(s.who, s.step === "calling");
    switch (s.step) {
      case "call_ended": return { text: t(T.en["call_ended." + s.result] ? "call_ended." + s.result : "call_ended.ended", { who: w }), cls: s.result === "confirmed" ? "ok" : (s.result === "failed" ? "bad" : "") };
      case "sms": return { text: t("sms." + s.sms, { who: w || "—" }) + (s.accepted ? "" : t("sms_failed")), cls: s.accepted ? "" : "bad" };
      case "door_code": return { text: t("door_code_step"), cls: "ok" };
      case "parking_pass": return { text: t("parking_pass_step"), cls: "ok" };
      case "door_code_expired": return { text: t("door_code_expired_step"), cls: "" };
      case "callback": return { text: t("callback", { who: w }), cls: "ok" };
      case "revoked": return { text: t("revoked"), cls: "ok" };
      case "revoke_failed": return { text: t("revoke_failed") + (s.error ? ": " + s.error : ""), cls: "bad" };
      case "closed": return { text: t("closed") + (reason(s.reason) ? " — " + reason(s.reason) : ""), cls: "" };
      case "clip": return { text: t("clip_step", { camera: s.camera, len: length(s.duration_s) }), cls: "" };
      case "clip_deleted": return { text: t("clip_deleted_step", { camera: s.camera }), cls: "" };
      default: return { text: t(s.step, { who: w }), cls: "" };
    }
  }

  function renderStatus() {
    var box = $("status");
    if (!state) { return; }
    var st = state.status;
    box.className = "card status status-" + st;
    var title = t("s_" + st), sub = "";
    if (st === "calling") { sub = t("s_calling_sub"); }
    if (st === "confirmed_contact") { sub = t("s_confirmed_contact_sub"); }
    if (st === "nobody_reached") { sub = t("s_nobody_reached_sub"); }
    if (st === "closed" && state.closed) { sub = reason(state.closed.reason); }
    text($("status-title"), title);
    text($("status-sub"), sub);
    $("test-flag").hidden = !state.incident.test;
    var heading = state.incident.subscriber ? t("title_for", { name: state.incident.subscriber }) : t("title");
    text($("heading"), heading);
    document.title = heading;
  }

  function renderCodes() {
    var c = state.codes, rv = state.revoke, revoked = rv.state === "done";
    [["door-code", c.door_code, c.door_valid_until], ["parking-code", c.parking_code, c.parking_valid_until]].forEach(function (x) {
      var el = $(x[0]);
      if (x[1]) {
        el.className = "code" + (revoked && x[0] === "door-code" ? " revoked" : "");
        text(el, x[1]);
        if (revoked && x[0] === "door-code") { el.setAttribute("aria-label", x[1] + " (" + t("revoked_code") + ")"); }
        if (x[2] && !revoked) { el.title = t("valid_until", { time: clock(x[2]) }); }
      } else {
        el.className = "code pending";
        text(el, t("not_yet"));
      }
    });
    var shown = rv.state !== "none" ? rv : revokeNote;
    var out = $("revoke-result"), btn = $("revoke");
    // Nothing to revoke until a door code is known (or a revoke was already asked for).
    btn.hidden = !rv.available || (!c.door_code && rv.state === "none");
    btn.disabled = rv.state === "pending";
    if (!shown || shown.state === "none") { out.hidden = true; return; }
    out.hidden = false;
    if (shown.state === "pending") { out.className = "revoke-result wait"; text(out, t("rv_pending")); }
    else if (shown.state === "done") {
      out.className = "revoke-result ok";
      var slots = (shown.cleared_slots || []).join(", ");
      text(out, t("rv_done", { time: clock(shown.at) || clock(new Date().toISOString()) }) + (slots ? t("rv_slots", { slots: slots }) : ""));
    } else if (shown.state === "forbidden") { out.className = "revoke-result bad"; text(out, t("rv_forbidden")); }
    else { out.className = "revoke-result bad"; text(out, t("rv_failed", { error: shown.error || t("unknown_error") })); }
  }

  function renderLists() {
    var ul = $("reached");
    ul.textContent = "";
    if (!state.reached.length) {
      var li0 = document.createElement("li"); li0.className = "muted"; text(li0, t("nobody_yet")); ul.appendChild(li0);
    }
    state.reached.forEach(function (r) {
      var li = document.createElement("li");
      if (r.you) { li.className = "you"; }
      text(li, "✓ " + who(r, true) + " — " + clock(r.at));
      ul.appendChild(li);
    });
    var ol = $("timeline");
    ol.textContent = "";
    state.timeline.slice().reverse().forEach(function (s) {
      var li = document.createElement("li"), tm = document.createElement("time"), span = document.createElement("span");
      var st = stepText(s);
      tm.dateTime = s.at || ""; text(tm, clock(s.at));
      text(span, st.text); if (st.cls) { span.className = st.cls; }
      li.setAttribute("data-step", s.step);
      li.appendChild(tm); li.appendChild(span); ol.appendChild(li);
    });
  }

  function renderLive(paused) {
    var el = $("live");
    el.textContent = "";
    if (paused) {
      text(el, t("paused") + " ");
      var b = document.createElement("button"); b.type = "button"; text(b, t("resume"));
      b.addEventListener("click", function () { polls = 0; closedPolls = 0; renderLive(false); poll(); });
      el.appendChild(b);
    } else if (failing) { text(el, t("offline")); }
    else if (lastOk) { text(el, t("live", { time: clock(lastOk.toISOString()) })); }
  }

  function render() {
    applyStatic();
    if (!state) { return; }
    renderStatus(); renderCodes(); renderClips(); renderLists(); renderLive(false);
  }

  function gone() {
    clearTimeout(timer);
    $("status").className = "card status status-gone";
    text($("status-title"), t("s_gone")); text($("status-sub"), "");
    $("revoke").hidden = true;
    $("clips-card").hidden = true;
    Object.keys(players).forEach(function (cam) { players[cam].video.removeAttribute("src"); });
    $("live").textContent = "";
  }

  function schedule() {
    polls += 1;
    if (state && state.closed && !(state.revoke && state.revoke.state === "pending")) { closedPolls += 1; }
    if (polls >= MAX_POLLS || closedPolls >= AFTER_CLOSE_POLLS) { renderLive(true); return; }
    timer = setTimeout(poll, POLL_MS);
  }

  function poll() {
    clearTimeout(timer);
    var headers = { "Accept": "application/json" };
    if (etag) { headers["If-None-Match"] = etag; }
    fetch(base + "/state", { headers: headers, cache: "no-store", credentials: "same-origin" }).then(function (r) {
      if (r.status === 404) { state = null; gone(); return null; }
      if (r.status === 304) { failing = false; lastOk = new Date(); renderLive(false); schedule(); return null; }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      etag = r.headers.get("ETag");
      return r.json().then(function (body) {
        var first = !state;
        state = body; failing = false; lastOk = new Date();
        if (first && !chosen) { lang = body.language === "zh" ? "zh" : "en"; }
        if (state.revoke.state !== "none") { revokeNote = null; }
        render(); schedule();
      });
    }).catch(function () { failing = true; renderLive(false); schedule(); });
  }

  function revoke() {
    if (!state) { return; }
    var btn = $("revoke");
    btn.disabled = true;
    revokeNote = { state: "pending" }; state.revoke.state = "pending"; renderCodes();
    fetch(base + "/revoke", {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: { "X-Family-Nonce": state.nonce, "Content-Type": "application/json" }, body: "{}"
    }).then(function (r) {
      if (r.status === 404) { gone(); return null; }
      if (r.status === 403) { revokeNote = { state: "forbidden" }; state.revoke.state = "none"; return null; }
      return r.json().then(function (body) {
        revokeNote = body.revoke; revokeNote.at = new Date().toISOString();
        state.revoke = Object.assign({}, state.revoke, body.revoke);
      });
    }).catch(function () {
      revokeNote = { state: "failed", error: t("offline") }; state.revoke.state = "none";
    }).then(function () { etag = null; if (state) { renderCodes(); } poll(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    applyStatic();
    $("lang").addEventListener("click", function () {
      lang = lang === "zh" ? "en" : "zh"; chosen = lang;
      try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* private mode: the choice lasts this page */ }
      render();
    });
    $("revoke").addEventListener("click", function () { $("confirm").returnValue = ""; $("confirm").showModal(); });
    $("confirm").addEventListener("close", function () { if ($("confirm").returnValue === "yes") { revoke(); } });
    poll();
  });
})();
