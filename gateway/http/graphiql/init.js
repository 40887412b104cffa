// Starts GraphiQL from the page's JSON config. Inlined into the page (its CSP hash is computed by
// gateway/http/graphiql/__init__.py), so it is not one more cached URL to version.
(function () {
  "use strict";

  const config = JSON.parse(
    document.getElementById("graphiql-config").textContent,
  );
  // `?q=`, `?variables=` and `?headers=` open the page with a query, its variables and request
  // headers (the demo's link carries its `Authorization` header this way):
  // the server never writes a key into the page.
  const parameters = new URLSearchParams(window.location.search);
  const urlQuery = parameters.get("q") || undefined;
  const urlVariables = parameters.get("variables") || undefined;
  // Only `demo` on loopback writes headers (its published key) into the config.
  const urlHeaders = parameters.get("headers") || config.headers || undefined;

  // The example operations, each in its own tab; a `?q=` query opens first (its own tab unless it
  // is one of the examples).
  const tabs = config.tabs.map(function (query) {
    return { query: query, headers: urlHeaders };
  });
  if (urlQuery !== undefined) {
    const index = tabs.findIndex(function (tab) {
      return tab.query.trim() === urlQuery.trim();
    });
    const first = index >= 0 ? tabs.splice(index, 1)[0] : { query: urlQuery };
    tabs.unshift(
      Object.assign(first, { variables: urlVariables, headers: urlHeaders }),
    );
  }

  function updateURL(name, value) {
    const next = new URLSearchParams(window.location.search);
    if (value) {
      next.set(name, value);
    } else {
      next.delete(name);
    }
    const search = next.toString();
    history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  const fetcher = GraphiQL.createFetcher({
    url: window.location.href.split(/[?#]/)[0],
  });
  const explorer = GraphiQLPluginExplorer.explorerPlugin();

  function Page() {
    const [headers, setHeaders] = React.useState(urlHeaders);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      plugins: [explorer],
      defaultTabs: tabs,
      query: tabs[0].query,
      variables: tabs[0].variables,
      headers: headers,
      defaultHeaders: urlHeaders,
      onEditQuery: function (query) {
        updateURL("q", query);
      },
      onEditVariables: function (variables) {
        updateURL("variables", variables);
      },
      onEditHeaders: setHeaders,
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      inputValueDeprecation: true,
      // GraphiQL's default: a key typed into the headers editor is not kept in localStorage.
      shouldPersistHeaders: false,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(Page),
  );
})();
