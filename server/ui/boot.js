// Starts the first API requests while the modules download (a round trip less on a slow
// link); api.js takes each answer once, by URL. A file, as the CSP forbids inline scripts.
(function () {
  var e = (window.ccEarly = {});
  var get = function (u) {
    e[u] = fetch(u, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
    e[u].catch(function () {}); // offline: api.js asks again and says so
  };
  try {
    get('/api/v1/session');
    // Data only if this browser was signed in last time (the cookie is HttpOnly).
    if (localStorage.getItem('cc.in') !== '1') return;
    var m = /^#\/unit\/(\d+)/.exec(location.hash);
    if (m) {
      get('/api/v1/units/' + m[1]);
      get('/api/v1/alarms?state=open&unit=' + m[1] + '&limit=20');
    } else if (!location.hash || location.hash === '#/') get('/api/v1/units');
  } catch (_) { /* no storage: the app asks itself */ }
})();
