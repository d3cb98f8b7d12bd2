// authql's GraphiQL page: mounts GraphiQL (loaded before this file, from
// this server, as are React and ReactDOM) on the endpoint the page was
// served from. A file of its own, not an inline script, so that the page's
// Content-Security-Policy can allow scripts from this origin only.
(function () {
  'use strict';

  var exampleQuery = [
    '# Welcome to authql.',
    '#',
    '# 1. Run "Login" (the play button offers each operation): fill in the',
    '#    username and password in the Variables pane below.',
    '# 2. Open the Headers pane below and paste the token it returned:',
    '#      { "Authorization": "Bearer <token>" }',
    '#    (headers are kept for this tab only, never stored).',
    '# 3. Run "Me".',
    '',
    'mutation Login($username: String!, $password: String!) {',
    '  login(username: $username, password: $password) {',
    '    token',
    '    expiresAt',
    '    user { id username }',
    '  }',
    '}',
    '',
    'query Me {',
    '  me { id username email lastLogin }',
    '}',
    ''
  ].join('\n');

  var exampleVariables = '{\n  "username": "",\n  "password": ""\n}\n';

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: window.location.pathname }),
      defaultQuery: exampleQuery,
      defaultTabs: [{ query: exampleQuery, variables: exampleVariables }],
      defaultEditorToolsVisibility: true,
      shouldPersistHeaders: false
    })
  );
})();
