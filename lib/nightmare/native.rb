# frozen_string_literal: true

# Nightmare::Native, the Rust front, built by extconf.rb at gem install or by
# `rake compile` in a checkout.
begin
  require "nightmare/nightmare"
rescue LoadError => e
  raise LoadError, "nightmare's native extension is not built (#{e.message}): " \
                   "run `rake compile` in a checkout, or reinstall the gem"
end
